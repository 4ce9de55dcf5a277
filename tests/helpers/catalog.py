"""Catalog pieces for pipeline-slice tests."""

from kedro.io import MemoryDataset


class PersistedMemoryDataset(MemoryDataset):
    """Keeps its data after the run, like a persisted catalog entry."""

    def _release(self) -> None:
        pass
