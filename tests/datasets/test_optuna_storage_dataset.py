"""OptunaStorageDataset: a SQLite file by default, the credentials' URL when given."""

from __future__ import annotations

import optuna
import pytest
from kedro.io import DataCatalog
from kedro.io.core import DatasetError

from so8t_kedro.datasets import OptunaStorageDataset


def test_default_is_a_sqlite_file_that_optuna_creates(tmp_path):
    dataset = OptunaStorageDataset(filepath=str(tmp_path / "hpo" / "studies.db"))
    assert not dataset.exists()
    url = dataset.load()
    assert url == f"sqlite:///{(tmp_path / 'hpo' / 'studies.db').as_posix()}"
    optuna.create_study(study_name="s", storage=url)
    assert dataset.exists()
    assert optuna.load_study(study_name="s", storage=dataset.load()).study_name == "s"


def test_credentials_url_wins_and_is_never_described(tmp_path):
    secret = "postgresql://optuna:hunter2@db.example/optuna"
    catalog = DataCatalog.from_config(
        {"hpo_study_storage": {"type": "so8t_kedro.datasets.OptunaStorageDataset",
                               "filepath": str(tmp_path / "studies.db"),
                               "credentials": "optuna_storage"}},
        credentials={"optuna_storage": {"url": secret}},
    )
    assert catalog.load("hpo_study_storage") == secret
    assert "hunter2" not in str(catalog["hpo_study_storage"])


def test_saving_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="read-only"):
        OptunaStorageDataset(filepath=str(tmp_path / "s.db")).save("sqlite:///other.db")
