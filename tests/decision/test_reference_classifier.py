"""The reference classifier: fit from the YAML parameters, LABELS-ordered scores and
probabilities, metrics equal to scikit-learn's, a skops round trip, and cross-fitted scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skops.io
import yaml
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold

from so8t_kedro.datasets import SkopsDataset
from so8t_kedro.decision import metrics
from so8t_kedro.decision.reference_classifier import (
    cross_fitted_scores,
    describe,
    fit_reference_classifier,
    reference_probabilities,
    reference_scores,
    score_requests_one_by_one,
)
from so8t_kedro.labels import LABELS

# float64 probabilities from the same arithmetic on the same input: a softmax of 4 logits
# and scikit-learn's own softmax differ by a few ulps at most.
PROBABILITY_TOLERANCE = 8 * np.finfo(np.float64).eps


@pytest.fixture(scope="module")
def params(project_root) -> dict:
    conf = yaml.safe_load((project_root / "conf/base/parameters_evaluation.yml").read_text())
    return conf["evaluation"]["reference_classifier"]


@pytest.fixture(scope="module")
def seed_split(project_root) -> tuple[list[str], list[str], list[str], list[str]]:
    """Every 4th seed request is held out (the seed file groups rows by label)."""
    rows = [json.loads(line) for line in
            (project_root / "data/01_raw/so8t_seed_dataset.jsonl").read_text().splitlines()]
    train, test = [r for i, r in enumerate(rows) if i % 4], rows[::4]
    return ([r["text"] for r in train], [r["label"] for r in train],
            [r["text"] for r in test], [r["label"] for r in test])


@pytest.fixture(scope="module")
def fitted(params, seed_split):
    train_texts, train_labels, _, _ = seed_split
    return fit_reference_classifier(train_texts, train_labels, params)


def test_scores_and_probabilities_follow_labels_order(fitted, seed_split):
    _, _, test_texts, test_labels = seed_split
    probabilities = reference_probabilities(fitted, test_texts)
    assert probabilities.shape == (len(test_texts), len(LABELS))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=PROBABILITY_TOLERANCE)
    # the logits' softmax is the probability distribution (as for the model's scores)
    np.testing.assert_allclose(metrics.softmax(reference_scores(fitted, test_texts)),
                               probabilities, atol=PROBABILITY_TOLERANCE)
    # column j is LABELS[j]: the predicted label's column holds the row's largest probability
    predicted_ids = fitted.predict(test_texts)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), predicted_ids)
    # a classifier that learns something: training texts are recalled, test beats chance
    assert accuracy_score(test_labels, np.asarray(LABELS)[predicted_ids]) > 0.5


def test_fit_is_seeded_and_one_by_one_scores_equal_batch_scores(fitted, params, seed_split):
    train_texts, train_labels, test_texts, _ = seed_split
    again = fit_reference_classifier(train_texts, train_labels, params)
    np.testing.assert_array_equal(reference_scores(again, test_texts),
                                  reference_scores(fitted, test_texts))
    scores, latency = score_requests_one_by_one(fitted, test_texts[:10])
    np.testing.assert_allclose(scores, reference_scores(fitted, test_texts[:10]),
                               rtol=PROBABILITY_TOLERANCE)
    assert latency.shape == (10,) and (latency > 0).all()
    assert describe(fitted).startswith("TF-IDF char_wb 1-3-grams")


def test_metrics_of_the_reference_equal_scikit_learns(fitted, seed_split):
    _, _, test_texts, test_labels = seed_split
    predicted = list(np.asarray(LABELS)[reference_probabilities(fitted, test_texts).argmax(1)])
    ours = metrics.classification_metrics(test_labels, predicted)
    assert ours["accuracy"] == pytest.approx(accuracy_score(test_labels, predicted))
    assert ours["macro_f1"] == pytest.approx(
        f1_score(test_labels, predicted, labels=list(LABELS), average="macro"))
    for label, f1 in zip(LABELS, f1_score(test_labels, predicted, labels=list(LABELS),
                                          average=None), strict=True):
        assert ours["per_class"][label]["f1"] == pytest.approx(f1)
    unsafe = [t in ("DENY", "REFUSE") for t in test_labels]
    missed = [u and p == "ALLOW" for u, p in zip(unsafe, predicted, strict=True)]
    assert ours["unsafe_miss_rate"] == pytest.approx(sum(missed) / sum(unsafe))


def test_bad_parameters_and_labels_are_named(params, seed_split):
    texts, labels, _, _ = seed_split
    with pytest.raises(ValueError, match=r"reference_classifier\.tfidf: .*'ngram'"):
        fit_reference_classifier(texts, labels, {**params, "tfidf": {"ngram": [1, 2]}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['C'\]"):
        fit_reference_classifier(texts, labels, {**params, "C": 1.0})
    with pytest.raises(ValueError, match=r"none of \['ESCALATION'\]"):
        kept = [(t, lab) for t, lab in zip(texts, labels, strict=True) if lab != "ESCALATION"]
        fit_reference_classifier(*zip(*kept, strict=True), params)
    with pytest.raises(ValueError, match="unknown label"):
        fit_reference_classifier(texts, ["ALLOWED", *labels[1:]], params)


# ------------------------------------------------------------------------- skops


def test_round_trip_through_the_dataset_gives_identical_probabilities(
        fitted, seed_split, tmp_path):
    _, _, test_texts, _ = seed_split
    dataset = SkopsDataset(filepath=str(tmp_path / "reference_classifier.skops"), trusted=[])
    dataset.save(fitted)
    loaded = dataset.load()
    np.testing.assert_array_equal(reference_probabilities(loaded, test_texts),
                                  reference_probabilities(fitted, test_texts))
    # the file holds only types skops trusts by default: the catalog's trusted: [] suffices
    assert skops.io.get_untrusted_types(file=tmp_path / "reference_classifier.skops") == []


def test_cross_fitted_scores_come_from_a_classifier_that_did_not_see_the_request(
        params, seed_split):
    """Each fold is scored by the reference fitted on the other folds: the same scores as
    refitting by hand on scikit-learn's stratified folds, and less sure of the train
    requests than the reference fitted on all of them (which has memorised them)."""
    texts, labels, _, _ = seed_split
    texts, labels = texts[::5], labels[::5]  # every label, a fifth of the rows
    crossed = cross_fitted_scores(texts, labels, params, folds=4)
    assert crossed.shape == (len(texts), len(LABELS))
    splitter = StratifiedKFold(n_splits=4, shuffle=True, random_state=params["seed"])
    fit_rows, score_rows = next(splitter.split(texts, labels))
    by_hand = fit_reference_classifier([texts[i] for i in fit_rows],
                                       [labels[i] for i in fit_rows], params)
    np.testing.assert_allclose(crossed[score_rows],
                               reference_scores(by_hand, [texts[i] for i in score_rows]),
                               rtol=1e-9, atol=1e-9)
    in_sample = reference_probabilities(fit_reference_classifier(texts, labels, params), texts)
    crossed_probabilities = metrics.softmax(crossed)
    gold = [LABELS.index(label) for label in labels]
    assert (crossed_probabilities[range(len(gold)), gold].mean()
            < in_sample[range(len(gold)), gold].mean() - 0.05)
    np.testing.assert_array_equal(crossed, cross_fitted_scores(texts, labels, params, folds=4))


def test_cross_fitting_refuses_too_few_folds_or_requests(params):
    texts = ["a", "b", "c", "d", "e", "f", "g"]
    labels = ["ALLOW", "ALLOW", "ESCALATION", "ESCALATION", "DENY", "DENY", "REFUSE"]
    with pytest.raises(ValueError, match="at least 2 folds"):
        cross_fitted_scores(texts, labels, params, folds=1)
    with pytest.raises(ValueError, match=r"at least 2 requests of every label.*'REFUSE': 1"):
        cross_fitted_scores(texts, labels, params, folds=2)
