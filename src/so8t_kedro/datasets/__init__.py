"""Custom Kedro datasets of this project."""

from .hf_directory_dataset import HFDirectoryDataset
from .optional_partitioned_dataset import OptionalPartitionedDataset

__all__ = ["HFDirectoryDataset", "OptionalPartitionedDataset"]
