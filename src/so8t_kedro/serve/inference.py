"""The /think service: generate in the /think format, return only the final part and the
four-class decision.

``ThinkService.answer`` renders the request with ``think_format.render_prompt`` (the
Phi-3.5 chat template with the /think system prompt), lets the backend generate the reply,
and keeps only what ``think_format.parse_reply`` proves to be the final part. The thinking
never leaves this module as text: :class:`ThinkAnswer` carries its SHA-256 hashes for the
audit log, nothing else. A reply without an extractable final part is answered with a
fixed fallback message, flagged ``fallback``.

The decision is not read from the generated text: it is the distribution over the four
labels from their log-likelihoods at the decision probe (``FourClassScorer``), the same
classifier evaluation and the A/B test use, so the served decision is the evaluated one.
The generated final part may still carry its own ``判定:`` line; that line is the model's
text, not the decision.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from so8t_kedro.classifier import FourClassScorer
from so8t_kedro.labels import LABELS
from so8t_kedro.metrics import softmax
from so8t_kedro.scoring import load_scoring_model
from so8t_kedro.serve.backends import Generation, HFBackend, LlamaCppBackend, stop_token_ids
from so8t_kedro.think_format import DEFAULT_FORMAT, THINK_PARTS, parse_reply, render_prompt

#: What a user sees when the generation has no final part that can be shown safely.
FALLBACK_MESSAGES: dict[str, str] = {
    "ja": "申し訳ありません。この依頼には回答を用意できませんでした。",
    "en": "Sorry, no answer could be prepared for this request.",
}
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
class ThinkAnswer:
    """What the service answers for one request: the shown final part and decision, and
    the audit facts about the rest (hashes and counts, never the thinking itself)."""

    final: str
    decision: str
    probabilities: dict[str, float]
    format_ok: bool
    fallback: bool
    reply_sha256: str
    thinking_sha256: dict[str, str]
    prompt_tokens: int
    new_tokens: int
    generation_ms: float
    latency_ms: float

    def response(self, request_id: str, latency_ms: float) -> dict:
        """The public JSON body (HTTP and CLI): nothing else of the answer goes out."""
        return {"request_id": request_id, "final": self.final, "decision": self.decision,
                "probabilities": self.probabilities, "format_ok": self.format_ok,
                "fallback": self.fallback, "latency_ms": round(latency_ms, 3)}

    def audit_fields(self) -> dict:
        """The answer's part of an audit line."""
        return {"decision": self.decision, "format_ok": self.format_ok,
                "fallback": self.fallback, "final_sha256": sha256_hex(self.final),
                "reply_sha256": self.reply_sha256, "thinking_sha256": self.thinking_sha256,
                "prompt_tokens": self.prompt_tokens, "new_tokens": self.new_tokens,
                "generation_ms": round(self.generation_ms, 3)}


class ThinkService:
    """Answers /think requests with one backend.

    Backend calls are serialised by a lock: a llama.cpp context is not thread-safe, and two
    concurrent generations on a CPU only slow each other down.
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

    def answer(self, text: str, language: str = "ja") -> ThinkAnswer:
        began = time.perf_counter()
        prompt = render_prompt(text, language)  # also validates the language
        with self._lock:
            generation = self.backend.generate(prompt, self.max_new_tokens)
            scores = self.backend.label_log_likelihoods(text, language)
        reply = parse_reply(generation.text)
        probabilities = softmax([scores], self.temperature)[0]
        return ThinkAnswer(
            final=reply.final or FALLBACK_MESSAGES[language],
            decision=LABELS[int(probabilities.argmax())],
            probabilities={label: float(p) for label, p in zip(LABELS, probabilities,
                                                               strict=True)},
            format_ok=reply.well_formed,
            fallback=not reply.final,
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
) -> ThinkService:
    """A :class:`ThinkService` for a stock Phi-3 model directory (e.g. the baked model).

    With ``gguf``, generation and scoring run in llama.cpp on that file and ``model_dir``
    supplies only the tokenizer and the stop tokens (it must be the directory the GGUF was
    converted from). ``fmt``: the /think format the model was trained on (it fixes the
    decision probe). ``temperature``: the calibrated temperature from evaluation, if any.
    ``device`` / ``quantization``: as in ``scoring.load_scoring_model`` (HF backend only).
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
                                  stop_token_ids(generation_config, tokenizer), n_ctx=n_ctx)
    return ThinkService(backend, max_new_tokens=max_new_tokens, temperature=temperature)
