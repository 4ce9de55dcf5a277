"""The `data_processing` pipeline: raw four-class JSONL -> clean, deduplicated splits."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
