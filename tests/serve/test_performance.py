"""The Japanese performance report and its summary."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from so8t_kedro.labels import LABELS
from so8t_kedro.serve import japanese_performance_report, summarise_performance
from so8t_kedro.serve.performance import PERFORMANCE_COLUMNS
from tests.helpers.project import project_parameters

PROMPTS = project_parameters()["export"]["japanese_performance"]["prompts"]

JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


@pytest.mark.slow
def test_report_on_the_tiny_model(tiny_base_dir):
    prompts = list(PROMPTS[:3])
    table = japanese_performance_report({"original": tiny_base_dir, "baked": tiny_base_dir},
                                        prompts, max_new_tokens=6, device="cpu")
    assert list(table.columns) == PERFORMANCE_COLUMNS
    assert list(zip(table["model"], table["prompt_id"], table["prompt"])) == [
        (model, i, prompt) for model in ("original", "baked") for i, prompt in enumerate(prompts)]
    assert (table["latency_ms"] >= table["generation_ms"]).all()
    assert (table["generation_ms"] > 0).all()
    assert table["new_tokens"].between(1, 6).all()
    assert table["tokens_per_s"].tolist() == pytest.approx(
        (table["new_tokens"] / (table["generation_ms"] / 1e3)).tolist())
    assert table["decision"].isin(LABELS).all()
    assert table["confidence"].between(0.25, 1.0).all()
    # Same weights under two names: same greedy replies, same decisions.
    original, baked = (table[table["model"] == name].reset_index() for name in ("original",
                                                                               "baked"))
    for column in ("new_tokens", "format_ok", "final_nonempty", "decision"):
        assert original[column].tolist() == baked[column].tolist()

    summary = summarise_performance(table)
    assert list(summary) == ["original", "baked"]
    for name, stats in summary.items():
        rows = table[table["model"] == name]
        assert stats["n_prompts"] == len(prompts)
        for share, column in (("format_ok_share", "format_ok"),
                              ("final_nonempty_share", "final_nonempty")):
            assert 0.0 <= stats[share] <= 1.0
            assert stats[share] == pytest.approx(rows[column].mean())
        assert stats["latency_ms_p50"] == pytest.approx(rows["latency_ms"].median())
        assert stats["decisions"] == rows["decision"].value_counts().to_dict()


def _row(model, latency, generation, tokens, format_ok, final, decision):
    return {"model": model, "prompt_id": 0, "prompt": "p", "latency_ms": latency,
            "generation_ms": generation, "prompt_tokens": 5, "new_tokens": tokens,
            "tokens_per_s": tokens / generation * 1e3, "format_ok": format_ok,
            "final_nonempty": final, "decision": decision, "confidence": 0.5}


def test_summary_values():
    table = pd.DataFrame([
        _row("b", 10.0, 100.0, 10, True, True, "ALLOW"),
        _row("b", 20.0, 300.0, 10, False, True, "DENY"),
        _row("b", 60.0, 100.0, 20, False, False, "DENY"),
        _row("a", 5.0, 1000.0, 0, True, True, "REFUSE"),
    ], columns=PERFORMANCE_COLUMNS)
    summary = summarise_performance(table)
    assert list(summary) == ["b", "a"]
    b = summary["b"]
    assert b["n_prompts"] == 3
    assert b["latency_ms_mean"] == pytest.approx(30.0)
    assert b["latency_ms_p50"] == pytest.approx(20.0)
    assert b["tokens_per_s"] == pytest.approx(40 / 0.5)  # all tokens over all time
    assert b["format_ok_share"] == pytest.approx(1 / 3)
    assert b["final_nonempty_share"] == pytest.approx(2 / 3)
    assert b["decisions"] == {"DENY": 2, "ALLOW": 1}
    assert summary["a"]["tokens_per_s"] == 0.0


def test_summary_rejects_other_tables():
    with pytest.raises(ValueError, match="missing"):
        summarise_performance(pd.DataFrame({"model": ["a"], "latency_ms": [1.0]}))


def test_report_needs_prompts():
    with pytest.raises(ValueError, match="no prompts"):
        japanese_performance_report({"m": "unused"}, [], max_new_tokens=4)


def test_configured_prompts_are_japanese_requests_two_per_class():
    assert len(PROMPTS) == 2 * len(LABELS)  # two per class
    assert len(set(PROMPTS)) == len(PROMPTS)
    assert all(JAPANESE.search(prompt) for prompt in PROMPTS)
