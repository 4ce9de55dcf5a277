"""Paired A/B statistics, checked against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from so8t_kedro.decision.ab_statistics import (
    HIGHER_IS_BETTER,
    METRIC_FUNCTIONS,
    decide_winner,
    mcnemar_test,
    paired_bootstrap_ci,
    paired_latency_test,
    unsafe_miss_test,
)
from so8t_kedro.labels import LABELS


def discordant(a_only: int, b_only: int, both: int = 5, neither: int = 3
               ) -> tuple[list[bool], list[bool]]:
    """Paired correctness with the given discordant counts (and some concordant pairs)."""
    correct_a = [True] * a_only + [False] * b_only + [True] * both + [False] * neither
    correct_b = [False] * a_only + [True] * b_only + [True] * both + [False] * neither
    return correct_a, correct_b


# ---------------------------------------------------------------- McNemar


def test_mcnemar_exact_binomial():
    result = mcnemar_test(*discordant(10, 2))
    assert result["a_only_correct"] == 10 and result["b_only_correct"] == 2
    assert result["n_discordant"] == 12
    assert result["method"] == "exact binomial"
    # Two-sided binomial(12, 1/2), observed 2 (or 10): 2 · P(X <= 2)
    # = 2 · (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 2 · (1 + 12 + 66) / 4096 = 0.0385742...
    assert result["p_value"] == pytest.approx(2 * 79 / 4096)
    assert result["statistic"] == 2.0


def test_mcnemar_chi_squared_with_continuity_correction():
    result = mcnemar_test(*discordant(30, 10))
    assert result["method"] == "chi-squared with continuity correction"
    # (|30 − 10| − 1)² / (30 + 10) = 361 / 40 = 9.025; P(χ²₁ > 9.025) = 0.0026631
    assert result["statistic"] == pytest.approx(9.025)
    assert result["p_value"] == pytest.approx(0.0026631, abs=1e-7)


def test_mcnemar_without_discordant_pairs():
    result = mcnemar_test(*discordant(0, 0))
    assert result["n_discordant"] == 0
    assert result["p_value"] == 1.0 and result["statistic"] == 0.0


@given(st.integers(0, 60), st.integers(0, 60))
def test_mcnemar_is_symmetric_in_a_and_b(a_only, b_only):
    forward = mcnemar_test(*discordant(a_only, b_only))
    backward = mcnemar_test(*reversed(discordant(a_only, b_only)))
    assert 0.0 <= forward["p_value"] <= 1.0
    assert forward["p_value"] == pytest.approx(backward["p_value"])
    assert forward["a_only_correct"] == backward["b_only_correct"]


def test_mcnemar_rejects_unpaired_input():
    with pytest.raises(ValueError, match="one length"):
        mcnemar_test([True, False], [True])


# ---------------------------------------------------------------- bootstrap


@pytest.fixture
def labelled() -> list[str]:
    rng = np.random.default_rng(0)
    return list(np.asarray(LABELS)[rng.integers(0, 4, 100)])


def test_bootstrap_of_identical_predictions_is_zero(labelled):
    predictions = labelled[::-1]
    result = paired_bootstrap_ci(labelled, predictions, predictions,
                                 METRIC_FUNCTIONS["accuracy"], n_resamples=200)
    assert (result["difference"], result["low"], result["high"]) == (0.0, 0.0, 0.0)
    assert result["n_resamples"] == 200 and result["confidence"] == 0.95
    assert result["method"] == "percentile" and result["n_undefined"] == 0


def test_bootstrap_when_b_is_always_right_and_a_always_wrong(labelled):
    always_wrong = [LABELS[(LABELS.index(y) + 1) % 4] for y in labelled]
    for name in ("accuracy", "macro_f1"):
        result = paired_bootstrap_ci(labelled, always_wrong, labelled, METRIC_FUNCTIONS[name],
                                     n_resamples=100)
        assert (result["difference"], result["low"], result["high"]) == (1.0, 1.0, 1.0)


def test_bootstrap_matches_the_normal_approximation_of_paired_accuracy():
    rng = np.random.default_rng(3)
    n = 200
    true_ids = rng.integers(0, 4, n)
    y_true = np.asarray(LABELS)[true_ids]
    wrong = np.asarray(LABELS)[(true_ids + rng.integers(1, 4, n)) % 4]
    pred_a = np.where(rng.random(n) < 0.6, y_true, wrong)
    pred_b = np.where(rng.random(n) < 0.7, y_true, wrong)
    # Accuracy B − A is the mean of d_i = [B right] − [A right]: its CI is about
    # mean ± 1.96 · sd(d) / √n.
    d = (pred_b == y_true).astype(float) - (pred_a == y_true)
    half_width = 1.96 * d.std() / np.sqrt(n)
    result = paired_bootstrap_ci(y_true, pred_a, pred_b,
                                 lambda t, p: float(np.mean(t == p)), n_resamples=4000, seed=7)
    assert result["difference"] == pytest.approx(d.mean())
    assert result["low"] == pytest.approx(d.mean() - half_width, abs=0.015)
    assert result["high"] == pytest.approx(d.mean() + half_width, abs=0.015)


def test_bootstrap_is_deterministic_for_a_seed(labelled):
    pred_a, pred_b = labelled[1:] + labelled[:1], labelled[:50] + labelled[50:][::-1]
    metric = METRIC_FUNCTIONS["accuracy"]
    first = paired_bootstrap_ci(labelled, pred_a, pred_b, metric, n_resamples=200, seed=5)
    assert paired_bootstrap_ci(labelled, pred_a, pred_b, metric, n_resamples=200,
                               seed=5) == first
    assert paired_bootstrap_ci(labelled, pred_a, pred_b, metric, n_resamples=200,
                               seed=6) != first


def test_bootstrap_leaves_out_resamples_where_the_metric_is_undefined():
    # One true DENY among 10: about (9/10)^10 = 35 % of resamples draw no unsafe sample.
    y_true = ["DENY"] + ["ALLOW"] * 9
    pred_a, pred_b = ["ALLOW"] * 10, ["DENY"] * 10
    result = paired_bootstrap_ci(y_true, pred_a, pred_b, METRIC_FUNCTIONS["unsafe_miss_rate"],
                                 n_resamples=500)
    assert result["difference"] == -1.0  # A misses the DENY, B does not
    assert 100 < result["n_undefined"] < 250
    assert result["low"] == result["high"] == -1.0


def test_metric_functions_return_nan_for_undefined_rates():
    assert np.isnan(METRIC_FUNCTIONS["unsafe_miss_rate"](["ALLOW"], ["DENY"]))
    assert np.isnan(METRIC_FUNCTIONS["over_refusal_rate"](["DENY"], ["DENY"]))
    assert METRIC_FUNCTIONS["over_refusal_rate"](["ALLOW", "ALLOW"], ["DENY", "ALLOW"]) == 0.5


# ---------------------------------------------------------------- latency


def test_paired_latency_test_detects_a_constant_slowdown():
    latency_a = np.random.default_rng(4).normal(100.0, 10.0, 30)
    result = paired_latency_test(latency_a, latency_a + 5.0)
    assert result["median_difference_ms"] == pytest.approx(5.0)
    assert result["method"] == "wilcoxon"
    assert result["p_value"] < 1e-4


def test_paired_latency_test_of_equal_latencies():
    result = paired_latency_test([12.0, 15.0, 9.0], [12.0, 15.0, 9.0])
    assert result == {"median_difference_ms": 0.0, "statistic": 0.0, "p_value": 1.0,
                      "method": "wilcoxon"}


# ---------------------------------------------------------------- decision


# An unsafe-miss test result with no difference between the arms (the guardrail passes).
NO_MISSES = {"n_unsafe": 10, "missed_a": 0, "missed_b": 0, "a_only_missed": 0,
             "b_only_missed": 0, "p_value": 1.0}


def decide(**kwargs) -> dict:
    return decide_winner(**{"unsafe_miss": NO_MISSES, "significance_level": 0.05, **kwargs})


def test_decide_winner_b_is_better():
    verdict = decide(metric="macro_f1", difference=0.05, significant=True, min_effect=0.02)
    assert verdict["winner"] == "B" and verdict["decision"] == "B is better"
    assert verdict["stopped_by"] == []
    assert "+0.0500" in verdict["rules"]["primary_metric"]["reason"]
    assert "B's unsafe-miss rate is not significantly worse" in verdict["reason"]


def test_decide_winner_a_is_better():
    verdict = decide(metric="accuracy", difference=-0.05, significant=True, min_effect=0.02)
    assert (verdict["winner"], verdict["decision"]) == ("A", "A is better")
    # the guardrail is stated for the candidate, A
    assert "A's unsafe-miss rate is not significantly worse" in verdict["reason"]


def test_decide_winner_lower_is_better():
    # Fewer unsafe misses with B: a negative difference is B's win.
    verdict = decide(metric="unsafe_miss_rate", difference=-0.1, significant=True,
                     min_effect=0.02)
    assert (verdict["winner"], verdict["decision"]) == ("B", "B is better")
    verdict = decide(metric="latency_p95_ms", difference=30.0, significant=True, min_effect=5.0)
    assert (verdict["winner"], verdict["decision"]) == ("A", "A is better")


@pytest.mark.parametrize("difference, significant, because", [
    (0.05, False, "not statistically significant"),
    (0.01, True, "below the minimum effect 0.02"),
])
def test_decide_winner_no_significant_difference(difference, significant, because):
    verdict = decide(metric="macro_f1", difference=difference, significant=significant,
                     min_effect=0.02)
    assert verdict["winner"] is None
    assert verdict["decision"] == "no significant difference"
    assert verdict["stopped_by"] == ["primary_metric"]
    assert because in verdict["rules"]["primary_metric"]["reason"]


def test_decide_winner_rejects_an_unknown_metric():
    with pytest.raises(ValueError, match="'f2'"):
        decide(metric="f2", difference=0.1, significant=True, min_effect=0.0)


# ------------------------------------------------------------ unsafe-miss guardrail


def test_unsafe_miss_test_counts_misses_on_truly_unsafe_requests_only():
    y_true = ["DENY", "REFUSE", "DENY", "REFUSE", "ALLOW", "ESCALATION"]
    pred_a = ["ALLOW", "REFUSE", "DENY", "ESCALATION", "ALLOW", "ALLOW"]
    pred_b = ["ALLOW", "ALLOW", "ALLOW", "REFUSE", "DENY", "ALLOW"]
    result = unsafe_miss_test(y_true, pred_a, pred_b)
    # 4 truly unsafe; A missed request 0, B requests 0, 1, 2 (ESCALATION is not a miss,
    # nor is anything on the ALLOW / ESCALATION requests)
    assert result["n_unsafe"] == 4
    assert (result["missed_a"], result["missed_b"]) == (1, 3)
    assert (result["miss_rate_a"], result["miss_rate_b"]) == (0.25, 0.75)
    assert (result["a_only_missed"], result["b_only_missed"]) == (0, 2)
    # exact binomial on 2 discordant pairs, both one way: p = 2 * 0.5^2
    assert result["method"] == "exact binomial"
    assert result["p_value"] == pytest.approx(0.5)
    none = unsafe_miss_test(["ALLOW"], ["DENY"], ["ALLOW"])
    assert none["n_unsafe"] == 0 and none["p_value"] == 1.0 and none["miss_rate_b"] is None


def misses(a_only: int, b_only: int, both: int = 2, neither: int = 20) -> dict:
    """An unsafe_miss_test result on truly unsafe requests with these paired misses."""
    y_true = ["DENY"] * (a_only + b_only + both + neither)
    pred_a = ["ALLOW"] * a_only + ["DENY"] * b_only + ["ALLOW"] * both + ["DENY"] * neither
    pred_b = ["DENY"] * a_only + ["ALLOW"] * b_only + ["ALLOW"] * both + ["DENY"] * neither
    return unsafe_miss_test(y_true, pred_a, pred_b)


def test_the_guardrail_stops_a_b_that_the_primary_rule_passes():
    # B is clearly better on macro-F1, but misses 12 truly unsafe requests A catches
    # (and catches none A misses): exact p = 2 * 0.5^12 = 0.00049
    verdict = decide(metric="macro_f1", difference=0.10, significant=True, min_effect=0.02,
                     unsafe_miss=misses(a_only=0, b_only=12))
    assert verdict["rules"]["primary_metric"]["passed"]
    assert not verdict["rules"]["unsafe_miss_guardrail"]["passed"]
    assert verdict["winner"] is None and verdict["stopped_by"] == ["unsafe_miss_guardrail"]
    assert verdict["decision"] == "stopped by the unsafe-miss guardrail"
    assert "B missed 14 and A 2 (12 missed by B only, 0 by A only; McNemar p = 0.0004883)" in (
        verdict["rules"]["unsafe_miss_guardrail"]["reason"])


def test_a_b_that_misses_more_but_not_significantly_more_passes_the_guardrail():
    # 3 vs 1 discordant misses: exact p = 0.625, not significant
    verdict = decide(metric="macro_f1", difference=0.10, significant=True, min_effect=0.02,
                     unsafe_miss=misses(a_only=1, b_only=3))
    assert (verdict["winner"], verdict["stopped_by"]) == ("B", [])


def test_the_primary_rule_stops_a_b_that_the_guardrail_passes():
    # B misses fewer truly unsafe requests (A only 12, B only 0), but its macro-F1 gain is
    # not significant
    verdict = decide(metric="macro_f1", difference=0.05, significant=False, min_effect=0.02,
                     unsafe_miss=misses(a_only=12, b_only=0))
    assert verdict["rules"]["unsafe_miss_guardrail"]["passed"]
    assert verdict["stopped_by"] == ["primary_metric"]
    assert (verdict["winner"], verdict["decision"]) == (None, "no significant difference")


def test_both_rules_can_fail_and_both_are_named():
    verdict = decide(metric="macro_f1", difference=0.05, significant=False, min_effect=0.02,
                     unsafe_miss=misses(a_only=0, b_only=12))
    assert verdict["stopped_by"] == ["primary_metric", "unsafe_miss_guardrail"]
    assert verdict["decision"] == "no significant difference"


def test_every_metric_function_has_a_direction():
    assert set(METRIC_FUNCTIONS) <= set(HIGHER_IS_BETTER)
