"""``conf/rehearsal/parameters_rehearsal.yml``: the ``rehearsal`` environment's own block
(benchmarks/borea_rehearsal.py); its ``training`` and ``export`` keys override conf/base's
and are checked by those files' models."""

from __future__ import annotations

from typing import Any, Literal

from so8t_kedro.parameters._base import Strict


class RehearsalParameters(Strict):
    phi3: dict[str, Any]  # Phi3Config's keyword arguments, checked by transformers
    borea_layers: int
    checkpoint_dtype: Literal["float32", "float16", "bfloat16"]
    tokenizer_vocab_size: int
    quantizations: list[Literal["8bit", "4bit"]]
    samples_per_label: int


class RehearsalFile(Strict):
    # Optional on purpose: present only in the rehearsal environment (--env=rehearsal).
    rehearsal: RehearsalParameters | None = None
