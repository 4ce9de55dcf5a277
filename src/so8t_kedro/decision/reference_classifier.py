"""The reference classifier: character n-gram TF-IDF + logistic regression (scikit-learn).

The plain text classifier every evaluation shows beside the model (DESIGN.md, "Four-class
decision"): a retrained model that does not beat it is not done. It is fitted on the train
split, seeded, and its scores are the logistic regression's logits in ``LABELS`` order, so
that ``softmax(scores)`` is its probability distribution exactly as for the model's label
log-likelihoods, and ``so8t_kedro.decision.metrics`` (ECE, temperature calibration...) scores both
alike. It is saved with skops (``so8t_kedro.datasets.SkopsDataset``), never as a pickle.

Framework-free (scikit-learn, numpy; no kedro). The API is small on purpose: benchmarks
import :func:`fit_reference_classifier` and :func:`reference_probabilities`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from so8t_kedro.labels import LABEL_TO_ID, LABELS

logger = logging.getLogger(__name__)

# The keys of params:evaluation.reference_classifier (parameters_evaluation.yml).
PARAMETER_KEYS = frozenset({"tfidf", "logistic_regression", "seed"})
_PARAMS_NAME = "parameters_evaluation.yml: evaluation.reference_classifier"


def _estimator(cls: type, arguments: Mapping[str, Any], key: str, **fixed: Any):
    """``cls(**arguments, **fixed)``, with an unknown argument named by its parameters key."""
    try:
        return cls(**arguments, **fixed)
    except TypeError as error:  # scikit-learn's own message names the argument
        raise ValueError(f"{_PARAMS_NAME}.{key}: {error}") from None


def fit_reference_classifier(texts: Sequence[str], labels: Sequence[str],
                             params: Mapping[str, Any]) -> Pipeline:
    """Fit TF-IDF (``params["tfidf"]``, scikit-learn's ``TfidfVectorizer`` arguments) +
    logistic regression (``params["logistic_regression"]``) on ``texts`` and their labels.

    ``params["seed"]`` is the regression's ``random_state``. The classes are the label ids
    0-3, so the classifier's columns follow ``LABELS``; every label must occur in
    ``labels``, else a column would be missing.

    Raises:
        ValueError: an unknown or missing parameters key or estimator argument, a label
            outside ``LABELS``, a label without training samples, or texts and labels of
            different lengths.
    """
    unknown, missing = set(params) - PARAMETER_KEYS, PARAMETER_KEYS - set(params)
    if unknown or missing:
        raise ValueError(f"{_PARAMS_NAME}: unknown key(s) {sorted(unknown)}, missing key(s) "
                         f"{sorted(missing)}; expected {sorted(PARAMETER_KEYS)}")
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    unknown_labels = sorted({str(label) for label in labels} - set(LABELS))
    if unknown_labels:
        raise ValueError(f"unknown label(s) {unknown_labels}; expected one of {LABELS}")
    present = set(labels)
    absent = [label for label in LABELS if label not in present]
    if absent:
        raise ValueError(f"the reference classifier needs training samples of every label; "
                         f"none of {absent}")
    tfidf = dict(params["tfidf"])
    if "ngram_range" in tfidf:  # YAML gives a list, scikit-learn wants a tuple
        tfidf["ngram_range"] = tuple(tfidf["ngram_range"])
    classifier = Pipeline([
        ("tfidf", _estimator(TfidfVectorizer, tfidf, "tfidf")),
        ("logistic_regression", _estimator(LogisticRegression, params["logistic_regression"],
                                           "logistic_regression",
                                           random_state=int(params["seed"]))),
    ])
    # One BLAS/OpenMP thread: the dense work is a few [4, n_features] products, and extra
    # threads only spin on a busy machine (seed set, 2 loaded cores: 20 s with 2, 6 s with 1).
    with threadpool_limits(limits=1):
        return classifier.fit(list(texts), [LABEL_TO_ID[label] for label in labels])


def fit_on_records(train_records: pd.DataFrame, params: Mapping[str, Any]) -> Pipeline:
    """:func:`fit_reference_classifier` on the records' texts and labels (the train split,
    ``params:evaluation.reference_classifier``)."""
    classifier = fit_reference_classifier(train_records["text"].tolist(),
                                          train_records["label"].tolist(), params)
    logger.info("Reference classifier fitted on %d requests: %s", len(train_records),
                describe(classifier))
    return classifier


def cross_fits(texts: Sequence[str], labels: Sequence[str], params: Mapping[str, Any],
               folds: int) -> Iterator[tuple[Pipeline, np.ndarray]]:
    """Per fold, the reference classifier fitted without it and the fold's row indices: the
    requests cut into ``folds`` stratified folds, shuffled with ``params["seed"]``.

    Raises:
        ValueError: ``folds`` below 2, or a label with fewer requests than ``folds`` (a fold
            would lack it), besides :func:`fit_reference_classifier`'s errors.
    """
    if folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {folds}")
    texts, labels = list(texts), list(labels)
    counts = Counter(labels)
    scarce = {label: counts[label] for label in LABELS if counts[label] < folds}
    if scarce:
        raise ValueError(f"cross-fitting with {folds} folds needs at least {folds} requests "
                         f"of every label; got {scarce}")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=int(params["seed"]))
    for fit_rows, fold_rows in splitter.split(texts, labels):
        yield fit_reference_classifier([texts[i] for i in fit_rows],
                                       [labels[i] for i in fit_rows], params), fold_rows


def cross_fitted_scores(texts: Sequence[str], labels: Sequence[str],
                        params: Mapping[str, Any], folds: int) -> np.ndarray:
    """[N, 4] logits (``LABELS`` order) of each request from a reference classifier fitted
    without it (:func:`cross_fits`).

    What the reference makes of a request it has not seen: the soft target of the
    training's distillation term. Its scores on its own training requests would be
    near-certain and teach nothing the labels do not. Raises :func:`cross_fits`' errors.
    """
    texts = list(texts)
    scores = np.zeros((len(texts), len(LABELS)), dtype=np.float64)
    for classifier, fold_rows in cross_fits(texts, labels, params, folds):
        with threadpool_limits(limits=1):
            scores[fold_rows] = reference_scores(classifier, [texts[i] for i in fold_rows])
    return scores


def _checked(classifier: Pipeline) -> Pipeline:
    classes = getattr(classifier, "classes_", None)
    if classes is None or list(classes) != list(range(len(LABELS))):
        raise ValueError(f"not a fitted reference classifier over the label ids "
                         f"0-{len(LABELS) - 1}: classes {classes}")
    return classifier


def reference_scores(classifier: Pipeline, texts: Sequence[str]) -> np.ndarray:
    """[N, 4] logits in ``LABELS`` order; their row softmax is :func:`reference_probabilities`
    (a multinomial logistic regression's probabilities are the softmax of its logits)."""
    return np.asarray(_checked(classifier).decision_function(list(texts)), dtype=np.float64)


def reference_probabilities(classifier: Pipeline, texts: Sequence[str]) -> np.ndarray:
    """[N, 4] probabilities in ``LABELS`` order, the same order as the model's."""
    return np.asarray(_checked(classifier).predict_proba(list(texts)), dtype=np.float64)


def score_requests_one_by_one(classifier: Pipeline,
                              texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`reference_scores` [N, 4] and per-request latency in ms [N], each request
    scored alone: the latency one caller sees, as the model's at ``scoring.batch_size: 1``."""
    _checked(classifier)
    scores = np.zeros((len(texts), len(LABELS)), dtype=np.float64)
    latency = np.zeros(len(texts), dtype=np.float64)
    for row, text in enumerate(texts):
        began = time.perf_counter()
        scores[row] = classifier.decision_function([text])[0]
        latency[row] = (time.perf_counter() - began) * 1e3
    return scores, latency


def describe(classifier: Pipeline) -> str:
    """One line saying what the classifier is, e.g. for a report's model table."""
    tfidf = _checked(classifier).named_steps["tfidf"]
    regression = classifier.named_steps["logistic_regression"]
    low, high = tfidf.ngram_range
    return (f"TF-IDF {tfidf.analyzer} {low}-{high}-grams ({len(tfidf.vocabulary_):,} "
            f"features) + logistic regression (C = {regression.C:g})")
