"""Reading an Optuna study that other processes are writing."""

from __future__ import annotations

import optuna
import sqlalchemy


def running_study_trials(url: str, study_name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials, read without creating its schema (a reader that created it too
    would race the writers for alembic's version row); [] until a writer has created it."""
    try:
        storage = optuna.storages.RDBStorage(url, skip_table_creation=True,
                                             skip_compatibility_check=True)
        return optuna.load_study(study_name=study_name, storage=storage).trials
    except (KeyError, optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError):
        return []
