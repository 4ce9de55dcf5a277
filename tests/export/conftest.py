"""Fixtures for the GGUF export tests: the tiny model's three GGUF files, built once.

``tiny_base_dir`` (tests/conftest.py) is the embedded tiny Phi-3 saved with
``save_base_model``: a stock Phi3ForCausalLM directory with ``tokenizer.model`` and the
Phi-3.5 chat template, exactly what the export pipeline gets from the bake node.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from so8t_kedro import think as tf
from so8t_kedro.export.gguf import quantize_gguf, verify_ggufs, write_gguf


@pytest.fixture(scope="module")
def gguf_files(tiny_base_dir: Path, tmp_path_factory) -> dict[str, Path]:
    """``{"F16", "Q8_0", "Q4_K_M"}`` -> file; Q4_K_M is quantised from the F16 file."""
    out = tmp_path_factory.mktemp("gguf")
    f16 = write_gguf(tiny_base_dir, out / "tiny-F16.gguf", "F16")
    return {
        "F16": f16,
        "Q8_0": write_gguf(tiny_base_dir, out / "tiny-Q8_0.gguf", "Q8_0"),
        "Q4_K_M": quantize_gguf(f16, out / "tiny-Q4_K_M.gguf", "Q4_K_M"),
    }


@pytest.fixture(scope="module")
def chat_prompts(sft_samples) -> dict[str, str]:
    """Chat-formatted texts: the chat tokens, the think tags, Japanese and English (which the
    tiny tokenizer, trained on Japanese, spells mostly in byte pieces), runs of spaces."""
    return {
        "ja_sft_sample": sft_samples["text"].iloc[0],
        "ja_prompt": tf.render_prompt("日本で一番高い山と、二番目に高い山を教えてください。"),
        "en_prompt": tf.render_prompt("  How do I   reset my password?\n\nThanks!", "en"),
        "en_multi_turn": (f"{tf.USER_TOKEN}\nHello, who are you?{tf.END_TOKEN}\n"
                          f"{tf.ASSISTANT_TOKEN}\n<think-task>greeting</think-task>\n"
                          f"<final>I am an assistant.</final>{tf.END_TOKEN}\n"
                          f"{tf.USER_TOKEN}\n 東京 and Kyoto? {tf.END_TOKEN}\n{tf.ASSISTANT_TOKEN}\n"),
    }


@pytest.fixture(scope="module")
def verified(gguf_files, tiny_base_dir, chat_prompts) -> dict[str, dict]:
    """``verify_ggufs`` of the files against the Hugging Face model, by type."""
    reports = verify_ggufs(list(gguf_files.values()), tiny_base_dir, list(chat_prompts.values()))
    return dict(zip(gguf_files, reports, strict=True))
