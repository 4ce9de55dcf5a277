"""A model and its tokenizer as one catalog object: what a node returns for
``HFDirectoryDataset`` to save (``save_pretrained`` into the dataset's directory)."""

from __future__ import annotations

from pathlib import Path

from so8t_kedro.models.loading import save_base_model
from so8t_kedro.so8t import save_adapter


class BaseModelBundle:
    """A model and its tokenizer, saved together (plus SentencePiece's tokenizer.model)."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def save_pretrained(self, path: str | Path) -> None:
        save_base_model(self.model, self.tokenizer, path)


class AdapterBundle:
    """A PEFT adapter with its SO8T gates, and the tokenizer it was trained with."""

    def __init__(self, peft_model, tokenizer):
        self.peft_model, self.tokenizer = peft_model, tokenizer

    def save_pretrained(self, path: str | Path) -> None:
        save_adapter(self.peft_model, path)
        self.tokenizer.save_pretrained(str(path))


__all__ = ["AdapterBundle", "BaseModelBundle"]
