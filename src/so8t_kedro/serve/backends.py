"""Inference backends: a Hugging Face model or a GGUF file run by llama.cpp.

A backend does two things for the /think service, both on token ids of the project's
(HF) tokenizer, so the two backends see exactly the same tokens:

* ``generate(prompt, max_new_tokens)``: greedy generation after the rendered /think prompt,
  stopping on the model's stop tokens (``generation_config.eos_token_id``: ``<|end|>``,
  ``<|assistant|>``, ``<|endoftext|>`` for Phi-3.5); the reply is decoded *with* special
  tokens, because ``think.parse_reply`` ends a reply at a new turn (``<|user|>``)
  and can only see that turn if it is still in the text;
* ``label_log_likelihoods(text, language)``: the four labels' scores at the decision
  probe, ``FourClassScorer``'s definition (``classifier.label_scores``; probe and
  continuation ids come from ``FourClassScorer.encode``, so they are the very ids the
  training loss scored).

Greedy decoding: the server's answers are then reproducible for a given model, which the
audit log (hashes of the reply) and the HF/GGUF comparison rely on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.special import log_softmax

from so8t_kedro.decision.classifier import FourClassScorer, label_scores
from so8t_kedro.decision.scoring import score_requests
from so8t_kedro.export.llama_process import LlamaProcess


@dataclass(frozen=True)
class Generation:
    """One generated reply: its raw text (thinking included) and what it cost."""

    text: str
    prompt_tokens: int
    new_tokens: int
    seconds: float


def stop_token_ids(generation_config, tokenizer) -> frozenset[int]:
    """The ids generation stops on: the model's ``eos_token_id`` (an int or a list), else
    the tokenizer's eos."""
    eos = getattr(generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return frozenset([eos] if isinstance(eos, int) else eos)


class HFBackend:
    """A transformers causal LM (base, retrained or baked) and its tokenizer."""

    def __init__(self, model, tokenizer, scorer: FourClassScorer):
        self.model = model
        self.tokenizer = tokenizer
        self.scorer = scorer
        self.device = next(model.parameters()).device

    def generate(self, prompt: str, max_new_tokens: int) -> Generation:
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False,
                                    return_tensors="pt")["input_ids"].to(self.device)
        began = time.perf_counter()
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=prompt_ids,
                attention_mask=torch.ones_like(prompt_ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        seconds = time.perf_counter() - began
        new_ids = output[0, prompt_ids.shape[1]:].tolist()
        return Generation(self.tokenizer.decode(new_ids, skip_special_tokens=False),
                          prompt_ids.shape[1], len(new_ids), seconds)

    def label_log_likelihoods(self, text: str, language: str) -> np.ndarray:
        scores, _ = score_requests(self.model, self.scorer, [text], [language])
        return scores[0]


class LlamaCppBackend:
    """A GGUF file run by llama.cpp in a child process (:class:`LlamaProcess`); prompts are
    tokenised with the HF tokenizer of the model directory the GGUF was converted from (same
    vocabulary, same ids), so the chat template and the probe are tokenised exactly as for
    the HF backend.

    The label scores use the same definition as :class:`FourClassScorer`
    (:func:`~so8t_kedro.decision.classifier.label_scores` of llama.cpp's log-softmaxed logits over
    each label's continuation tokens). The probe is evaluated once and each label's
    continuation on top of its cached state.

    A native crash raises :class:`NativeCrashError` for that request; the next request
    starts a new child (one model load), so the service recovers by itself.
    """

    def __init__(self, gguf_path: str | Path, tokenizer, scorer: FourClassScorer,
                 stop_ids: frozenset[int], *, n_ctx: int = 4096,
                 extra_buffer_types: str = "off"):
        self.tokenizer = tokenizer
        self.scorer = scorer
        self.stop_ids = stop_ids
        self._gguf_path = str(gguf_path)
        self._llama_options = {"extra_buffer_types": extra_buffer_types, "n_ctx": n_ctx,
                               "logits_all": True}
        self._llm = self._start()

    def _start(self) -> LlamaProcess:
        return LlamaProcess(self._gguf_path, operation="serving", **self._llama_options)

    def _call(self, name: str, *args):
        if not self._llm.alive:  # the previous request crashed it
            self._llm.close()
            self._llm = self._start()
        return self._llm.call(name, *args)

    def generate(self, prompt: str, max_new_tokens: int) -> Generation:
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        budget = min(max_new_tokens, self._llama_options["n_ctx"] - len(prompt_ids))
        if budget < 1:
            raise ValueError(f"the prompt ({len(prompt_ids)} tokens) fills the context "
                             f"window ({self._llama_options['n_ctx']} tokens)")
        began = time.perf_counter()
        # temp=0 is llama.cpp's greedy sampler, as do_sample=False is for the HF backend.
        new_ids = self._call("generate", prompt_ids, budget, self.stop_ids)
        seconds = time.perf_counter() - began
        return Generation(self.tokenizer.decode(new_ids, skip_special_tokens=False),
                          len(prompt_ids), len(new_ids), seconds)

    def label_log_likelihoods(self, text: str, language: str) -> np.ndarray:
        encoded = self.scorer.encode(text, language)
        probe = encoded[0][0]  # one probe for all four labels
        continuations = [continuation for _, continuation in encoded]
        token_log_probs = []
        for continuation, logits in zip(
                continuations, self._call("continuation_logits", probe, continuations)):
            log_probs = log_softmax(logits.astype(np.float64), axis=-1)
            token_log_probs.append(log_probs[np.arange(len(continuation)), continuation])
        return np.asarray(label_scores(token_log_probs, continuations), dtype=np.float64)

    def close(self) -> None:
        self._llm.close()
