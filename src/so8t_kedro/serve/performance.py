"""The Japanese performance report (the seeds' ``japanese_llm_performance_test``).

Each model answers a fixed list of Japanese requests through the /think service exactly
as the server would; a row records how long the answer took, how many tokens were
generated and how fast, whether the reply kept the /think format, whether it had a final
part to show, and the four-class decision. Framework-free: a Kedro node passes the model
directories and the prompts from parameters (``export.japanese_performance.prompts``).
"""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from so8t_kedro.decision.metrics import latency_summary
from so8t_kedro.serve.inference import load_service

PERFORMANCE_COLUMNS: list[str] = [
    "model", "prompt_id", "prompt", "latency_ms", "generation_ms", "prompt_tokens",
    "new_tokens", "tokens_per_s", "format_ok", "final_nonempty", "decision", "confidence",
]


def japanese_performance_report(
    models: Mapping[str, str | Path],
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    device: str = "auto",
) -> pd.DataFrame:
    """One row per (model, prompt) (:data:`PERFORMANCE_COLUMNS`), models in the given order.

    ``models``: name -> stock Phi-3 model directory (original, baked, ...). Each model is
    loaded once and answers one untimed warm-up request first, so that one-off start-up
    costs (allocations, kernel selection) do not land on the first prompt's latency.
    ``latency_ms`` is the whole answer (generation, scoring, parsing); ``tokens_per_s`` is
    ``new_tokens`` over the generation time alone. ``format_ok``: the reply parses in the
    /think format without problems; ``final_nonempty``: it has a final part that the
    disclosure rules let out (else an ALLOW request gets the fallback message).
    """
    if not prompts:
        raise ValueError("no prompts for the Japanese performance report")
    rows = []
    for name, model_dir in models.items():
        service = load_service(model_dir, max_new_tokens=max_new_tokens, device=device)
        service.assess(prompts[0], "ja")
        for prompt_id, prompt in enumerate(prompts):
            answer = service.assess(prompt, "ja")
            seconds = answer.generation_ms / 1e3
            rows.append({
                "model": name, "prompt_id": prompt_id, "prompt": prompt,
                "latency_ms": answer.latency_ms, "generation_ms": answer.generation_ms,
                "prompt_tokens": answer.prompt_tokens, "new_tokens": answer.new_tokens,
                "tokens_per_s": answer.new_tokens / seconds if seconds > 0 else 0.0,
                "format_ok": answer.format_ok,
                "final_nonempty": answer.model_answer is not None,
                "decision": answer.decision,
                "confidence": answer.probabilities[answer.decision],
            })
        del service
        gc.collect()  # free one model's weights before the next one loads
    return pd.DataFrame(rows, columns=PERFORMANCE_COLUMNS)


def summarise_performance(table: pd.DataFrame) -> dict:
    """Per model (in order of appearance): ``n_prompts``, ``latency_ms_mean`` /
    ``latency_ms_p50`` / ``latency_ms_p95``, ``tokens_per_s`` (all new tokens over all
    generation time: the throughput, not a mean of per-prompt rates),
    ``format_ok_share``, ``final_nonempty_share`` and ``decisions`` (counts per label)."""
    missing = sorted(set(PERFORMANCE_COLUMNS) - set(table.columns))
    if missing:
        raise ValueError(f"not a japanese_performance_report table: missing {missing}")
    summary = {}
    for name, rows in table.groupby("model", sort=False):
        latency = latency_summary(rows["latency_ms"].tolist())
        seconds = rows["generation_ms"].sum() / 1e3
        summary[str(name)] = {
            "n_prompts": len(rows),
            "latency_ms_mean": latency["mean"],
            "latency_ms_p50": latency["p50"],
            "latency_ms_p95": latency["p95"],
            "tokens_per_s": float(rows["new_tokens"].sum() / seconds) if seconds > 0 else 0.0,
            "format_ok_share": float(rows["format_ok"].mean()),
            "final_nonempty_share": float(rows["final_nonempty"].mean()),
            "decisions": {str(k): int(v) for k, v in rows["decision"].value_counts().items()},
        }
    return summary
