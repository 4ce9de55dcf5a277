"""Four-class metrics and calibration, checked against values computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from so8t_kedro.decision.metrics import (
    accuracy,
    brier_score,
    calibration_summary,
    classification_metrics,
    expected_calibration_error,
    fit_temperature,
    latency_summary,
    macro_f1,
    negative_log_likelihood,
    over_refusal_rate,
    reliability_bins,
    small_sample_warnings,
    softmax,
    unsafe_miss_rate,
    unsafe_misses,
)
from so8t_kedro.labels import LABELS

# Rows = true label, columns = predicted, both in LABELS order (ALLOW, ESCALATION, DENY,
# REFUSE). 13 samples, 3 + 2 + 2 + 1 = 8 on the diagonal.
CONFUSION = [
    [3, 0, 1, 1],  # ALLOW: 2 over-refusals (-> DENY, -> REFUSE)
    [0, 2, 1, 0],  # ESCALATION
    [1, 0, 2, 0],  # DENY: 1 unsafe miss (-> ALLOW)
    [0, 0, 1, 1],  # REFUSE: -> DENY is a wrong class but not a miss
]


def samples_from_confusion(matrix: list[list[int]]) -> tuple[list[str], list[str]]:
    """(y_true, y_pred) with exactly ``matrix``'s counts."""
    pairs = [(LABELS[t], LABELS[p]) for t, row in enumerate(matrix)
             for p, count in enumerate(row) for _ in range(count)]
    y_true, y_pred = zip(*pairs, strict=True)
    return list(y_true), list(y_pred)


@pytest.fixture
def four_class() -> tuple[list[str], list[str]]:
    return samples_from_confusion(CONFUSION)


# ---------------------------------------------------------------- label-based metrics


def test_classification_metrics_on_a_known_confusion_matrix(four_class):
    result = classification_metrics(*four_class)
    assert result["n_samples"] == 13
    assert result["labels"] == list(LABELS)
    assert result["confusion_matrix"] == CONFUSION
    assert result["accuracy"] == pytest.approx(8 / 13)
    # F1 = 2TP / (2TP + FP + FN); FP = column sum - TP, FN = row sum - TP.
    # ALLOW:      TP 3, FP 1 (DENY->ALLOW), FN 2  -> P 3/4, R 3/5, F1 6/9
    # ESCALATION: TP 2, FP 0,               FN 1  -> P 1,   R 2/3, F1 4/5
    # DENY:       TP 2, FP 3,               FN 1  -> P 2/5, R 2/3, F1 4/8
    # REFUSE:     TP 1, FP 1,               FN 1  -> P 1/2, R 1/2, F1 2/4
    expected = {
        "ALLOW": (3 / 4, 3 / 5, 6 / 9, 5),
        "ESCALATION": (1.0, 2 / 3, 4 / 5, 3),
        "DENY": (2 / 5, 2 / 3, 1 / 2, 3),
        "REFUSE": (1 / 2, 1 / 2, 1 / 2, 2),
    }
    assert list(result["per_class"]) == list(LABELS)
    for label, (precision, recall, f1, support) in expected.items():
        scores = result["per_class"][label]
        assert scores["precision"] == pytest.approx(precision)
        assert scores["recall"] == pytest.approx(recall)
        assert scores["f1"] == pytest.approx(f1)
        assert scores["support"] == support
    # (6/9 + 4/5 + 1/2 + 1/2) / 4 = (20 + 24 + 15 + 15) / 30 / 4 = 74/120
    assert result["macro_f1"] == pytest.approx(74 / 120)
    assert macro_f1(*four_class) == pytest.approx(74 / 120)
    assert accuracy(*four_class) == pytest.approx(8 / 13)
    # unsafe miss: 1 DENY->ALLOW of 3 DENY + 2 REFUSE; over-refusal: 2 of 5 ALLOW.
    assert result["unsafe_miss_rate"] == pytest.approx(1 / 5)
    assert result["false_positive_rate"] == result["unsafe_miss_rate"]
    assert result["over_refusal_rate"] == pytest.approx(2 / 5)


def test_classification_metrics_are_json_friendly(four_class):
    result = classification_metrics(*four_class)
    assert json.loads(json.dumps(result)) == result


def test_macro_f1_counts_absent_labels_as_zero():
    # ALLOW: TP 1, FP 0, FN 1 -> F1 2/3; DENY: TP 1, FP 1, FN 0 -> F1 2/3;
    # ESCALATION and REFUSE appear nowhere -> 0. Macro = (2/3 + 2/3 + 0 + 0) / 4 = 1/3.
    y_true, y_pred = ["ALLOW", "ALLOW", "DENY"], ["ALLOW", "DENY", "DENY"]
    assert macro_f1(y_true, y_pred) == pytest.approx(1 / 3)
    assert classification_metrics(y_true, y_pred)["macro_f1"] == pytest.approx(1 / 3)


def test_unsafe_miss_and_over_refusal_rates():
    y_true = ["DENY", "REFUSE", "REFUSE", "DENY", "ALLOW", "ALLOW", "ESCALATION"]
    y_pred = ["ALLOW", "ALLOW", "DENY", "ESCALATION", "REFUSE", "ESCALATION", "DENY"]
    # 4 true unsafe, 2 of them -> ALLOW (-> DENY and -> ESCALATION are not misses).
    assert unsafe_miss_rate(y_true, y_pred) == pytest.approx(2 / 4)
    unsafe, missed = unsafe_misses(y_true, y_pred)
    assert unsafe.tolist() == [True, True, True, True, False, False, False]
    assert missed.tolist() == [True, True, False, False, False, False, False]
    # 2 true ALLOW, 1 -> REFUSE (-> ESCALATION is not a refusal; ESCALATION -> DENY is not
    # an ALLOW sample).
    assert over_refusal_rate(y_true, y_pred) == pytest.approx(1 / 2)


def test_rates_are_none_without_their_reference_class():
    y_true, y_pred = ["ESCALATION", "ALLOW"], ["DENY", "DENY"]
    assert unsafe_miss_rate(y_true, y_pred) is None
    result = classification_metrics(y_true, y_pred)
    assert result["unsafe_miss_rate"] is None and result["false_positive_rate"] is None
    assert over_refusal_rate(["DENY"], ["ALLOW"]) is None
    assert classification_metrics(["DENY"], ["ALLOW"])["over_refusal_rate"] is None


@pytest.mark.parametrize("y_true, y_pred, bad", [
    (["ALLOW", "BLOCK"], ["ALLOW", "ALLOW"], "BLOCK"),
    (["ALLOW"], ["allow"], "allow"),  # labels are taken as given, not normalised
])
def test_unknown_labels_are_rejected_by_name(y_true, y_pred, bad):
    with pytest.raises(ValueError, match=repr(bad)):
        classification_metrics(y_true, y_pred)


def test_classification_metrics_rejects_empty_and_unpaired_input():
    with pytest.raises(ValueError, match="no samples"):
        classification_metrics([], [])
    with pytest.raises(ValueError, match="one length"):
        classification_metrics(["ALLOW", "DENY"], ["ALLOW"])


# ---------------------------------------------------------------- probabilities


def test_softmax_with_temperature():
    # exp of [0, ln 2, ln 3, ln 4] is [1, 2, 3, 4], sum 10.
    scores = np.log([[1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_allclose(softmax(scores), [[0.1, 0.2, 0.3, 0.4]])
    # T = 2 halves the log-scores: exp -> [1, √2, √3, 2].
    root = np.sqrt([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(softmax(scores, 2.0), [root / root.sum()])
    # Large scores do not overflow.
    np.testing.assert_allclose(softmax(np.array([[1000.0, 1000.0, 0.0, 0.0]])),
                               [[0.5, 0.5, 0.0, 0.0]])
    with pytest.raises(ValueError, match="temperature"):
        softmax(scores, 0.0)


# Six samples for 5 bins with edges 0, .2, .4, .6, .8, 1; two sit exactly on an edge.
BIN_PROBABILITIES = np.array([
    [0.40, 0.30, 0.20, 0.10],  # conf .40 (edge -> bin (.2,.4]), predicts 0, true 0: right
    [0.30, 0.35, 0.20, 0.15],  # conf .35 (bin (.2,.4]), predicts 1, true 0: wrong
    [0.10, 0.10, 0.70, 0.10],  # conf .70 (bin (.6,.8]), predicts 2, true 2: right
    [0.05, 0.05, 0.10, 0.80],  # conf .80 (edge -> bin (.6,.8]), predicts 3, true 3: right
    [0.90, 0.05, 0.05, 0.00],  # conf .90 (bin (.8,1]), predicts 0, true 1: wrong
    [1.00, 0.00, 0.00, 0.00],  # conf 1.0 (bin (.8,1]), predicts 0, true 0: right
])
BIN_TRUE_IDS = [0, 0, 2, 3, 1, 0]


def test_reliability_bins_by_hand():
    bins = reliability_bins(BIN_PROBABILITIES, BIN_TRUE_IDS, n_bins=5)
    assert list(bins.columns) == ["bin_lower", "bin_upper", "count", "confidence", "accuracy"]
    np.testing.assert_allclose(bins["bin_lower"], [0.0, 0.2, 0.4, 0.6, 0.8])
    np.testing.assert_allclose(bins["bin_upper"], [0.2, 0.4, 0.6, 0.8, 1.0])
    assert bins["count"].tolist() == [0, 2, 0, 2, 2]
    # bin (.2,.4]: conf (.40 + .35)/2 = .375, acc 1/2; (.6,.8]: conf (.7 + .8)/2 = .75,
    # acc 1; (.8,1]: conf (.9 + 1)/2 = .95, acc 1/2. Empty bins are NaN.
    np.testing.assert_allclose(bins["confidence"], [np.nan, 0.375, np.nan, 0.75, 0.95])
    np.testing.assert_allclose(bins["accuracy"], [np.nan, 0.5, np.nan, 1.0, 0.5])


def test_expected_calibration_error_by_hand():
    # 2/6 · |.5 − .375| + 2/6 · |1 − .75| + 2/6 · |.5 − .95| = (.125 + .25 + .45) / 3
    assert expected_calibration_error(BIN_PROBABILITIES, BIN_TRUE_IDS, n_bins=5) == \
        pytest.approx(0.825 / 3)


def test_expected_calibration_error_with_15_bins_and_an_edge():
    probabilities = np.array([
        [7 / 15, 6 / 15, 1 / 15, 1 / 15],  # conf 7/15: the edge, so bin 6 = (6/15, 7/15]
        [0.5, 0.3, 0.1, 0.1],  # conf .5: bin 7 = (7/15, 8/15]
    ])
    true_ids = [0, 1]  # the first is right, the second wrong
    bins = reliability_bins(probabilities, true_ids)
    assert len(bins) == 15
    assert bins["count"].tolist() == [0] * 6 + [1, 1] + [0] * 7
    # 1/2 · |1 − 7/15| + 1/2 · |0 − 1/2| = 4/15 + 1/4 = 31/60
    assert expected_calibration_error(probabilities, true_ids) == pytest.approx(31 / 60)


def test_the_first_bin_includes_zero_confidence():
    bins = reliability_bins(np.zeros((1, 4)), [0], n_bins=5)
    assert bins["count"].tolist() == [1, 0, 0, 0, 0]


@settings(deadline=None)  # sklearn calls can exceed 200 ms on a busy runner
@given(st.lists(st.tuples(st.integers(1, 20), st.floats(0.0, 1.0)), min_size=1, max_size=8),
       st.integers(1, 20))
def test_ece_of_a_calibrated_construction_is_zero(groups, n_bins):
    """Each group of n samples has confidence k/n and exactly k of them right, so every
    bin (any union of groups) has accuracy Σk/Σn = its mean confidence: ECE = 0."""
    rows, true_ids = [], []
    for n, share in groups:
        right = math.ceil(n / 4) + round(share * (n - math.ceil(n / 4)))  # k/n >= 1/4
        confidence = right / n
        row = [confidence] + [(1 - confidence) / 3] * 3  # label 0 is the argmax
        rows += [row] * n
        true_ids += [0] * right + [1] * (n - right)
    assert expected_calibration_error(np.array(rows), true_ids, n_bins) == \
        pytest.approx(0.0, abs=1e-9)


@settings(deadline=None)  # sklearn calls can exceed 200 ms on a busy runner
@given(st.lists(st.tuples(st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4),
                          st.integers(0, 3)), min_size=1, max_size=40),
       st.integers(1, 30))
def test_probability_scores_stay_in_their_ranges(samples, n_bins):
    weights = np.array([w for w, _ in samples]) + 1e-3
    probabilities = weights / weights.sum(axis=1, keepdims=True)
    true_ids = [y for _, y in samples]
    assert 0.0 <= expected_calibration_error(probabilities, true_ids, n_bins) <= 1.0
    assert 0.0 <= brier_score(probabilities, true_ids) <= 2.0
    assert negative_log_likelihood(probabilities, true_ids) >= 0.0


def test_brier_score_by_hand():
    probabilities = np.array([[0.7, 0.2, 0.1, 0.0], [0.25, 0.25, 0.25, 0.25]])
    # (1 − .7)² + .2² + .1² + 0² = .09 + .04 + .01 = .14;
    # 3 · .25² + (1 − .25)² = .1875 + .5625 = .75; mean (.14 + .75) / 2 = .445 (not halved)
    assert brier_score(probabilities, [0, 3]) == pytest.approx(0.445)
    assert brier_score(np.eye(4), [0, 1, 2, 3]) == 0.0
    assert brier_score(np.eye(4), [1, 2, 3, 0]) == pytest.approx(2.0)  # 1² + 1² per sample


def test_negative_log_likelihood_by_hand():
    probabilities = np.array([[0.7, 0.2, 0.1, 0.0], [0.25, 0.25, 0.25, 0.25]])
    # −(ln .7 + ln .25) / 2 = (0.356675 + 1.386294) / 2 = 0.871485
    assert negative_log_likelihood(probabilities, [0, 3]) == pytest.approx(0.871485, abs=1e-6)


def test_probability_inputs_are_checked():
    with pytest.raises(ValueError, match="empty"):
        expected_calibration_error(np.zeros((0, 4)), [])
    with pytest.raises(ValueError, match="shape"):
        brier_score(np.full((2, 3), 1 / 3), [0, 1])
    with pytest.raises(ValueError, match="ids 0-3"):
        negative_log_likelihood(np.full((1, 4), 0.25), ["ALLOW"])
    with pytest.raises(ValueError, match="ids 0-3"):
        negative_log_likelihood(np.full((1, 4), 0.25), [4])


# ---------------------------------------------------------------- temperature scaling


def sample_labels(scores: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """One label id per row, drawn from softmax(scores / temperature)."""
    cumulative = softmax(scores, temperature).cumsum(axis=1)
    return (rng.random((len(scores), 1)) < cumulative).argmax(axis=1)


def overconfident_scores(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Scores 8 nats higher for the predicted label (p ≈ 0.999), right only 60 % of the
    time: far too confident."""
    true_ids = rng.integers(0, 4, n)
    predicted = np.where(rng.random(n) < 0.6, true_ids, (true_ids + 1) % 4)
    return 8.0 * np.eye(4)[predicted], true_ids


def test_fit_temperature_recovers_the_generating_temperature():
    rng = np.random.default_rng(0)
    scores = rng.normal(0.0, 3.0, size=(20_000, 4))
    true_ids = sample_labels(scores, 2.0, rng)
    assert fit_temperature(scores, true_ids) == pytest.approx(2.0, rel=0.1)


def test_fit_temperature_lowers_the_nll_of_an_overconfident_model():
    scores, true_ids = overconfident_scores(2000, np.random.default_rng(1))
    temperature = fit_temperature(scores, true_ids)
    assert temperature > 1.0  # softening
    assert negative_log_likelihood(softmax(scores, temperature), true_ids) < \
        negative_log_likelihood(softmax(scores), true_ids) - 0.5


def test_fit_temperature_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        fit_temperature(np.zeros((0, 4)), [])
    with pytest.raises(ValueError, match="bounds"):
        fit_temperature(np.zeros((2, 4)), [0, 1], bounds=(2.0, 1.0))


def test_calibration_summary_improves_validation_calibration():
    rng = np.random.default_rng(2)
    scores_val, y_val = overconfident_scores(1000, rng)
    summary = calibration_summary(scores_val, y_val, n_bins=10)
    assert summary["temperature"] == pytest.approx(fit_temperature(scores_val, y_val))
    assert set(summary["validation"]) == {"nll_before", "nll_after", "ece_before", "ece_after"}
    validation = summary["validation"]
    assert validation["nll_after"] <= validation["nll_before"]
    assert validation["ece_after"] <= validation["ece_before"]
    assert json.loads(json.dumps(summary)) == summary


# ---------------------------------------------------------------- summaries


def test_latency_summary_by_hand():
    # p50: the middle value 30. p95: position .95 · (5 − 1) = 3.8 -> 40 + .8 · (100 − 40)
    assert latency_summary([40, 10, 100, 30, 20]) == {
        "p50": 30.0, "p95": pytest.approx(88.0), "mean": 40.0, "max": 100.0, "n": 5}
    assert latency_summary([]) == {"p50": None, "p95": None, "mean": None, "max": None, "n": 0}


def test_small_sample_warnings():
    y_true = ["ALLOW"] * 30 + ["ESCALATION"] * 29 + ["DENY"]
    assert small_sample_warnings(y_true, 30) == [
        "ESCALATION: 29 sample(s) < 30; its precision/recall/F1 mean little",
        "DENY: 1 sample(s) < 30; its precision/recall/F1 mean little",
        "REFUSE: 0 sample(s) < 30; its precision/recall/F1 mean little",
    ]
    assert small_sample_warnings(y_true + ["REFUSE"], 1) == []
