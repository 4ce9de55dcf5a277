"""Custom Kedro datasets of this project."""

from .hf_directory_dataset import HFDirectoryDataset
from .optional_partitioned_dataset import OptionalPartitionedDataset
from .optuna_storage_dataset import OptunaStorageDataset
from .skops_dataset import SkopsDataset

__all__ = ["HFDirectoryDataset", "OptionalPartitionedDataset", "OptunaStorageDataset",
           "SkopsDataset"]
