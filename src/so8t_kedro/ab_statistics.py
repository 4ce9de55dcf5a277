"""Paired A/B statistics: model A (original) against model B (retrained) on the same samples.

McNemar's test on per-sample correctness, a paired percentile bootstrap of any label
metric's difference, a Wilcoxon signed-rank test on paired latencies, and the final
decision. Differences are always B − A. Framework-free (no kedro); tests from scipy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import wraps

import numpy as np
from scipy.stats import binomtest, chi2, wilcoxon

from so8t_kedro import metrics

# Whether a larger value of a metric is the better one.
HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "macro_f1": True,
    "unsafe_miss_rate": False,
    "over_refusal_rate": False,
    "ece": False,
    "brier": False,
    "latency_p50_ms": False,
    "latency_p95_ms": False,
}

# Below this many discordant pairs McNemar's chi-squared approximation is poor, so the
# exact binomial test is used instead (the usual rule of thumb).
MCNEMAR_EXACT_BELOW = 25


def _undefined_as_nan(metric: Callable[[Sequence[str], Sequence[str]], float | None]
                      ) -> Callable[[Sequence[str], Sequence[str]], float]:
    """``metric`` with ``None`` (an undefined rate) returned as NaN, for resampling."""
    @wraps(metric)
    def as_float(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
        value = metric(y_true, y_pred)
        return np.nan if value is None else float(value)
    return as_float


# The label-based metrics, as (y_true, y_pred) -> float. A rate that is undefined on the
# given samples (e.g. no true DENY/REFUSE for unsafe_miss_rate) is NaN here.
METRIC_FUNCTIONS: dict[str, Callable[[Sequence[str], Sequence[str]], float]] = {
    "accuracy": metrics.accuracy,
    "macro_f1": metrics.macro_f1,
    "unsafe_miss_rate": _undefined_as_nan(metrics.unsafe_miss_rate),
    "over_refusal_rate": _undefined_as_nan(metrics.over_refusal_rate),
}


def _paired(first: Sequence, second: Sequence, names: str) -> tuple[np.ndarray, np.ndarray]:
    """Two 1-D arrays of one length (paired samples), or ValueError naming them."""
    first, second = np.asarray(first), np.asarray(second)
    if first.ndim != 1 or first.shape != second.shape:
        raise ValueError(f"{names} must be 1-D and paired (one length), got shapes "
                         f"{first.shape} and {second.shape}")
    return first, second


def mcnemar_test(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict:
    """McNemar's test on paired per-sample correctness of models A and B.

    Only the discordant pairs count: ``a_only_correct`` (A right, B wrong) and
    ``b_only_correct``. With fewer than 25 of them the exact two-sided binomial test
    (p = 0.5) is used and ``statistic`` is the smaller of the two counts; otherwise the
    chi-squared test with continuity correction, (|b − c| − 1)² / (b + c) on 1 degree of
    freedom. Without discordant pairs there is no evidence either way: p = 1.
    """
    correct_a, correct_b = _paired(np.asarray(correct_a, dtype=bool),
                                   np.asarray(correct_b, dtype=bool), "correct_a and correct_b")
    a_only = int(np.sum(correct_a & ~correct_b))
    b_only = int(np.sum(correct_b & ~correct_a))
    n_discordant = a_only + b_only
    counts = {"a_only_correct": a_only, "b_only_correct": b_only, "n_discordant": n_discordant}
    if n_discordant == 0:
        return {**counts, "statistic": 0.0, "p_value": 1.0, "method": "exact binomial"}
    if n_discordant < MCNEMAR_EXACT_BELOW:
        p_value = binomtest(a_only, n_discordant, p=0.5, alternative="two-sided").pvalue
        return {**counts, "statistic": float(min(a_only, b_only)), "p_value": float(p_value),
                "method": "exact binomial"}
    statistic = (abs(a_only - b_only) - 1) ** 2 / n_discordant
    return {**counts, "statistic": float(statistic), "p_value": float(chi2.sf(statistic, df=1)),
            "method": "chi-squared with continuity correction"}


def paired_bootstrap_ci(y_true: Sequence[str], pred_a: Sequence[str], pred_b: Sequence[str],
                        metric: Callable[[Sequence[str], Sequence[str]], float], *,
                        n_resamples: int = 2000, confidence: float = 0.95,
                        seed: int = 0) -> dict:
    """Percentile bootstrap confidence interval of metric(B) − metric(A).

    Each resample draws sample indices with replacement (the same indices for A and B,
    so the pairing is kept) from a numpy Generator seeded with ``seed``. A resample on
    which the metric is undefined (NaN, e.g. no true DENY/REFUSE drawn) is left out of the
    percentiles and counted in ``n_undefined``.

    Returns ``{"difference": on the full data, "low", "high", "confidence",
    "n_resamples", "n_undefined", "method": "percentile"}``; a difference or bound that is
    undefined is ``None``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    # dtype=object keeps the labels python strings, as the metric gets them unresampled.
    true, pred_a = _paired(np.asarray(y_true, dtype=object), np.asarray(pred_a, dtype=object),
                           "y_true and pred_a")
    true, pred_b = _paired(true, np.asarray(pred_b, dtype=object), "y_true and pred_b")
    if len(true) == 0:
        raise ValueError("no samples to resample")

    def difference(indices: np.ndarray) -> float:
        value_a, value_b = (metric(true[indices], pred[indices]) for pred in (pred_a, pred_b))
        return np.nan if value_a is None or value_b is None else value_b - value_a

    rng = np.random.default_rng(seed)
    resampled = np.array([difference(rng.integers(0, len(true), len(true)))
                          for _ in range(n_resamples)], dtype=float)
    defined = resampled[~np.isnan(resampled)]
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(defined, [tail, 100 - tail]) if defined.size else (None, None)
    full = difference(np.arange(len(true)))
    return {
        "difference": None if np.isnan(full) else float(full),
        "low": None if low is None else float(low),
        "high": None if high is None else float(high),
        "confidence": confidence,
        "n_resamples": n_resamples,
        "n_undefined": int(n_resamples - defined.size),
        "method": "percentile",
    }


def paired_latency_test(latency_a_ms: Sequence[float], latency_b_ms: Sequence[float]) -> dict:
    """Wilcoxon signed-rank test on paired per-request latencies (two-sided).

    ``median_difference_ms`` is the median of B − A. Zero differences are dropped before
    ranking (scipy's default ``zero_method="wilcox"``); when every difference is zero there
    is nothing to rank (scipy rejects it): p = 1.
    """
    latency_a, latency_b = _paired(np.asarray(latency_a_ms, dtype=float),
                                   np.asarray(latency_b_ms, dtype=float),
                                   "latency_a_ms and latency_b_ms")
    if latency_a.size == 0:
        raise ValueError("no paired latencies to test")
    differences = latency_b - latency_a
    median_difference = float(np.median(differences))
    if not np.any(differences):
        return {"median_difference_ms": median_difference, "statistic": 0.0, "p_value": 1.0,
                "method": "wilcoxon"}
    result = wilcoxon(differences)
    return {"median_difference_ms": median_difference, "statistic": float(result.statistic),
            "p_value": float(result.pvalue), "method": "wilcoxon"}


def decide_winner(*, metric: str, difference: float, significant: bool,
                  min_effect: float) -> dict:
    """The A/B verdict on the primary ``metric`` from its difference B − A.

    B (or A) wins only when the difference is significant and at least ``min_effect`` in
    size, in the metric's better direction (:data:`HIGHER_IS_BETTER`); otherwise the
    decision is "no significant difference" and ``reason`` says which condition failed.

    Returns ``{"winner": "A" | "B" | None, "decision": "A is better" | "B is better" |
    "no significant difference", "reason": a sentence with the numbers}``.
    """
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric {metric!r}; expected one of "
                         f"{', '.join(HIGHER_IS_BETTER)}")
    if min_effect < 0:
        raise ValueError(f"min_effect must be non-negative, got {min_effect}")
    direction = "higher" if HIGHER_IS_BETTER[metric] else "lower"
    # ASCII only: the reason is logged, and Windows consoles (cp932) reject a minus sign.
    measured = f"{metric} B - A = {difference:+.4f} ({direction} is better)"
    if not significant:
        reason = f"{measured} is not statistically significant."
    elif np.isnan(difference):
        reason = f"{measured} is undefined."
    elif difference == 0 or abs(difference) < min_effect:
        reason = f"{measured} is below the minimum effect {min_effect:g}."
    else:
        winner = "B" if (difference > 0) == HIGHER_IS_BETTER[metric] else "A"
        return {"winner": winner, "decision": f"{winner} is better",
                "reason": f"{measured} is significant and at least the minimum effect "
                          f"{min_effect:g}."}
    return {"winner": None, "decision": "no significant difference", "reason": reason}
