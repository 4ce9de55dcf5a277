"""Custom Kedro datasets of this project."""

from .hf_directory_dataset import HFDirectoryDataset
from .optional_partitioned_dataset import OptionalPartitionedDataset
from .optuna_storage_dataset import OptunaStorageDataset

__all__ = ["HFDirectoryDataset", "OptionalPartitionedDataset", "OptunaStorageDataset"]
