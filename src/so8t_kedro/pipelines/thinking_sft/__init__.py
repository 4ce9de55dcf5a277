"""The `thinking_sft` pipeline: four-class records rendered as /think chat samples."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
