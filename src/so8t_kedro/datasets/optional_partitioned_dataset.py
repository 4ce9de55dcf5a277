"""A PartitionedDataset for input folders that may legitimately be empty."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kedro_datasets._typing import JSONPreview
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

    def preview(self, max_partitions: int = 50) -> JSONPreview:
        """The folder's partitions (id, bytes) as a kedro-viz JSON preview; nothing is read.

        ``max_partitions`` (``metadata: {kedro-viz: {preview_args: ...}}``) caps the
        listed ids; ``n_partitions`` and ``total_bytes`` always count every file.
        """
        self._invalidate_caches()
        paths = sorted(self._list_partitions())
        sizes = [int(self._filesystem.size(path) or 0) for path in paths]
        return JSONPreview(
            json.dumps(
                {
                    "path": self._path,
                    "n_partitions": len(paths),
                    "total_bytes": sum(sizes),
                    "partitions": [
                        {"id": self._path_to_partition(path), "size_bytes": size}
                        for path, size in zip(paths[:max_partitions], sizes, strict=False)
                    ],
                },
                ensure_ascii=False,
            )
        )
