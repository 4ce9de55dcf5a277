"""Reading an Optuna study that other processes are writing."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import optuna
import sqlalchemy


def running_study_trials(url: str, study_name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials, read without writing to the database; [] until a writer has
    created and stamped its schema. Even with ``skip_table_creation`` Optuna's storage
    stamps alembic's version row when it finds the tables without one, so a reader that
    opened it between a writer's two steps raced that writer for the row (a CI failure:
    "UNIQUE constraint failed: alembic_version.version_num")."""
    if not _schema_stamped(url):
        return []
    try:
        storage = optuna.storages.RDBStorage(url, skip_table_creation=True,
                                             skip_compatibility_check=True)
        return optuna.load_study(study_name=study_name, storage=storage).trials
    except (KeyError, optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError):
        return []


def _schema_stamped(url: str) -> bool:
    """Whether the SQLite file at ``url`` has its alembic version row, read only."""
    path = url.removeprefix("sqlite:///")
    try:
        # closing(): sqlite3's own context manager commits but leaves the file open
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as database:
            return database.execute("SELECT count(*) FROM alembic_version").fetchone()[0] > 0
    except sqlite3.Error:
        return False
