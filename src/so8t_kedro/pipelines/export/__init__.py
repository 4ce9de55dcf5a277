"""The `export` pipeline (placeholder until its issue lands)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
