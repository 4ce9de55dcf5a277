"""Custom Kedro datasets of this project."""

from .optional_partitioned_dataset import OptionalPartitionedDataset

__all__ = ["OptionalPartitionedDataset"]
