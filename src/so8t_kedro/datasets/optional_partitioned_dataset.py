"""A PartitionedDataset for input folders that may legitimately be empty."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kedro_datasets.partitions import PartitionedDataset


class OptionalPartitionedDataset(PartitionedDataset):
    """``partitions.PartitionedDataset`` where an empty or missing folder loads as ``{}``.

    Kedro's dataset raises "No partitions found" instead, but "drop any number of
    ``four_class_*.jsonl`` files here, zero included" is the contract of the raw
    four_class folder, on a fresh clone and on a new D:/webdataset alike.
    """

    def load(self) -> dict[str, Callable[[], Any]]:
        self._invalidate_caches()
        if not self._list_partitions():
            return {}
        return super().load()
