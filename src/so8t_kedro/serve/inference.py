"""The /think service: generate in the /think format, score the four-class decision, and
decide what of the generation may be shown.

``ThinkService.assess`` renders the request with ``think.render_prompt`` (the
Phi-3.5 chat template with the /think system prompt), lets the backend generate the reply,
takes the candidate final part ``think.parse_reply`` finds, and lets it out only
through the deny-by-default rules of :mod:`~so8t_kedro.think.disclosure`. The thinking
never leaves this module as text: :class:`Assessment` carries its SHA-256 hashes for the
audit log, nothing else. What the user is shown for the decision is the reply policy's
business (:mod:`~so8t_kedro.serve.policy`).

The decision is not read from the generated text: it is the distribution over the four
labels from their log-likelihoods at the decision probe (``FourClassScorer``), the same
classifier evaluation and the A/B test use, so the served decision is the evaluated one.
The generated final part's own ``判定:`` line is the model's text: it is recorded
(``generated_decision``) and compared, never shown.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from so8t_kedro.decision.classifier import FourClassScorer
from so8t_kedro.decision.metrics import softmax
from so8t_kedro.decision.scoring import load_scoring_model
from so8t_kedro.labels import LABELS
from so8t_kedro.serve.backends import Generation, HFBackend, LlamaCppBackend, stop_token_ids
from so8t_kedro.think import DEFAULT_FORMAT, THINK_PARTS, parse_reply, render_prompt
from so8t_kedro.think.disclosure import disclose

#: The thinking parts hashed one by one in the audit log. Other ``<think-x>`` keys come
#: from the generation itself (``x`` is model text) and are covered by ``reply_sha256``.
_HASHED_PARTS: tuple[str, ...] = (*THINK_PARTS, "steps")


class Backend(Protocol):
    def generate(self, prompt: str, max_new_tokens: int) -> Generation: ...

    def label_log_likelihoods(self, text: str, language: str) -> np.ndarray: ...


def sha256_hex(text: str) -> str:
    """SHA-256 of ``text``'s UTF-8 bytes, as hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def request_audit_fields(text: str, language: str) -> dict:
    """The request's part of an audit line: its hash and length, never its text."""
    return {"request_sha256": sha256_hex(text), "request_chars": len(text), "language": language}


@dataclass(frozen=True)
class Assessment:
    """What the model made of one request: the served decision and its probabilities, the
    model's own decision line, its answer when it may be shown (``model_answer``; else
    ``None`` and ``withheld``, the disclosure rule's reason), and the audit facts about the
    rest (hashes and counts, never the thinking itself)."""

    decision: str
    probabilities: dict[str, float]
    generated_decision: str | None
    model_answer: str | None
    withheld: str | None
    format_ok: bool
    reply_sha256: str
    thinking_sha256: dict[str, str]
    prompt_tokens: int
    new_tokens: int
    generation_ms: float
    latency_ms: float

    @property
    def disagrees(self) -> bool:
        """The model's decision line names another decision than the served one."""
        return self.generated_decision is not None and self.generated_decision != self.decision


class ThinkService:
    """Answers /think requests with one backend.

    Backend calls are serialised by a lock: one model object never runs two requests at
    once (a llama.cpp context is not thread-safe, and two concurrent generations on a CPU
    only slow each other down).
    """

    def __init__(self, backend: Backend, *, max_new_tokens: int = 512,
                 temperature: float = 1.0):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.backend = backend
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self._lock = threading.Lock()

    def assess(self, text: str, language: str = "ja") -> Assessment:
        began = time.perf_counter()
        prompt = render_prompt(text, language)  # also validates the language
        with self._lock:
            generation = self.backend.generate(prompt, self.max_new_tokens)
            scores = self.backend.label_log_likelihoods(text, language)
        reply = parse_reply(generation.text)
        disclosure = disclose(reply.final)
        probabilities = softmax([scores], self.temperature)[0]
        return Assessment(
            decision=LABELS[int(probabilities.argmax())],
            probabilities={label: float(p) for label, p in zip(LABELS, probabilities,
                                                               strict=True)},
            generated_decision=reply.decision,
            model_answer=disclosure.answer,
            withheld=disclosure.reason,
            format_ok=reply.well_formed,
            reply_sha256=sha256_hex(generation.text),
            thinking_sha256={part: sha256_hex(reply.thinking[part])
                             for part in _HASHED_PARTS if part in reply.thinking},
            prompt_tokens=generation.prompt_tokens,
            new_tokens=generation.new_tokens,
            generation_ms=generation.seconds * 1e3,
            latency_ms=(time.perf_counter() - began) * 1e3,
        )


def load_service(
    model_dir: str | Path,
    *,
    gguf: str | Path | None = None,
    max_new_tokens: int = 512,
    temperature: float = 1.0,
    fmt: str = DEFAULT_FORMAT,
    device: str | None = "auto",
    quantization: str | None = None,
    max_probe_tokens: int = 1024,
    n_ctx: int = 4096,
    extra_buffer_types: str = "off",
) -> ThinkService:
    """A :class:`ThinkService` for a stock Phi-3 model directory (e.g. the baked model).

    With ``gguf``, generation and scoring run in llama.cpp on that file and ``model_dir``
    supplies only the tokenizer and the stop tokens (it must be the directory the GGUF was
    converted from). ``fmt``: the /think format the model was trained on (it fixes the
    decision probe). ``temperature``: the calibrated temperature from evaluation, if any.
    ``device`` / ``quantization``: as in ``scoring.load_scoring_model`` (HF backend only).
    ``extra_buffer_types``: llama.cpp's AMX/repack layouts (GGUF only; see
    ``export.llama_process``): off, auto or on.
    """
    if gguf is None:
        model, tokenizer = load_scoring_model(model_dir, device=device,
                                              quantization=quantization)
        backend: Backend = HFBackend(model, tokenizer,
                                     FourClassScorer(tokenizer, fmt, max_probe_tokens))
    else:
        from transformers import AutoTokenizer, GenerationConfig

        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        generation_config = GenerationConfig.from_pretrained(model_dir, local_files_only=True)
        backend = LlamaCppBackend(gguf, tokenizer,
                                  FourClassScorer(tokenizer, fmt, max_probe_tokens),
                                  stop_token_ids(generation_config, tokenizer), n_ctx=n_ctx,
                                  extra_buffer_types=extra_buffer_types)
    return ThinkService(backend, max_new_tokens=max_new_tokens, temperature=temperature)
