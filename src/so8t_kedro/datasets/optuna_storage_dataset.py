"""The Optuna study's storage URL as a catalog entry, so that credentials can supply it.

Kedro hands credentials to datasets, not to nodes. This read-only dataset turns
``filepath`` into ``sqlite:///<filepath>`` (the default: a file under the webdataset
root) unless its credentials carry a ``url`` (any SQLAlchemy URL, e.g. a PostgreSQL
server that several machines share). Optuna itself writes the study.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError


class OptunaStorageDataset(AbstractDataset[str, str]):
    """Loads an RDB URL for ``optuna.create_study(storage=...)``.

    Example catalog entry::

        hpo_study_storage:
          type: so8t_kedro.datasets.OptunaStorageDataset
          filepath: data/06_models/hpo/optuna_studies.db
          credentials: optuna_storage   # optional; credentials.yml: {optuna_storage: {url: ...}}
    """

    def __init__(self, *, filepath: str, credentials: dict[str, Any] | None = None,
                 metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self._url = (credentials or {}).get("url")
        self.metadata = metadata

    def load(self) -> str:
        if self._url:
            return str(self._url)
        # SQLite creates the file, not its folder.
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self._filepath.resolve().as_posix()}"

    def save(self, data: str) -> None:
        raise DatasetError("OptunaStorageDataset is read-only: Optuna writes the study")

    def _describe(self) -> dict[str, Any]:
        # Never the URL from credentials: it may hold a password.
        return {"filepath": str(self._filepath), "from_credentials": bool(self._url)}

    def _exists(self) -> bool:
        return bool(self._url) or self._filepath.is_file()
