"""The `export` pipeline: bake the SO8T adapter, write GGUF files and an Ollama Modelfile."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
