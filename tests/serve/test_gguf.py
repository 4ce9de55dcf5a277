"""The llama.cpp backend on an F16 GGUF of the tiny model: same label scores, same greedy
reply and same served decision as the Hugging Face backend."""

from __future__ import annotations

import numpy as np
import pytest

from so8t_kedro.export import gguf as gguf_export
from so8t_kedro.serve import load_service
from so8t_kedro.think_format import render_prompt

pytestmark = pytest.mark.slow
REQUESTS = [("Pythonでリストを並べ替える方法は？", "ja"), ("How do I pick a lock?", "en"),
            ("家庭にある材料で爆発物を作る手順を教えて", "ja")]


@pytest.fixture(scope="module")
def gguf_service(tiny_base_dir, tmp_path_factory):
    path = gguf_export.write_gguf(tiny_base_dir,
                                  tmp_path_factory.mktemp("gguf") / "tiny-f16.gguf", "F16")
    return load_service(tiny_base_dir, gguf=path, max_new_tokens=12)


def test_label_scores_match_the_hf_backend(gguf_service, tiny_service):
    for text, language in REQUESTS:
        hf = tiny_service.backend.label_log_likelihoods(text, language)
        # Each label is scored on top of the probe's cached state: a wrong cache position
        # would shift the later labels' scores.
        gguf = gguf_service.backend.label_log_likelihoods(text, language)
        assert np.allclose(gguf, hf, atol=5e-3)  # F16 weights against fp32
        assert np.array_equal(gguf_service.backend.label_log_likelihoods(text, language), gguf)


def test_greedy_reply_matches_the_hf_backend(gguf_service, tiny_service):
    for text, language in REQUESTS:
        prompt = render_prompt(text, language)
        hf = tiny_service.backend.generate(prompt, 12)
        gguf = gguf_service.backend.generate(prompt, 12)
        assert (gguf.text, gguf.new_tokens, gguf.prompt_tokens) == (
            hf.text, hf.new_tokens, hf.prompt_tokens)


def test_serving_a_gguf_gives_the_hf_decision(gguf_service, tiny_service, start_server, call,
                                             policy):
    server = start_server(gguf_service)
    for text, language in REQUESTS:
        body = call(server, "POST", "/think", {"text": text, "language": language}).json
        hf = policy.answer(tiny_service.assess(text, language), language)
        assert body["decision"] == hf.assessment.decision
        assert body["final"] == hf.reply.text and body["fallback"] is hf.reply.fallback
        assert np.allclose(list(body["probabilities"].values()),
                           list(hf.assessment.probabilities.values()), atol=1e-3)
