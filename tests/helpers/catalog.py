"""Catalog pieces for pipeline-slice tests."""

from pathlib import Path

import yaml
from kedro.io import MemoryDataset

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class PersistedMemoryDataset(MemoryDataset):
    """Keeps its data after the run, like a persisted catalog entry."""

    def _release(self) -> None:
        pass


def project_catalog_entry(name: str, filepath: Path) -> dict:
    """The project's catalog entry for ``name`` (YAML anchors resolved), pointed at a
    temporary file, so that a test also round-trips the real load/save arguments."""
    config = yaml.safe_load((PROJECT_ROOT / "conf/base/catalog.yml").read_text(encoding="utf-8"))
    return {**config[name], "filepath": str(filepath)}
