"""The ab_test pipeline: paired comparison, the verdicts and their two rules, the reference
classifier as an arm, the report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from kedro.runner import SequentialRunner

from so8t_kedro.decision.reference_classifier import fit_reference_classifier
from so8t_kedro.labels import LABELS
from so8t_kedro.models.selection import resolve_model
from so8t_kedro.pipelines.ab_test import create_pipeline
from so8t_kedro.pipelines.ab_test.nodes import compare_models, render_ab_test_report, score_arm
from tests.helpers.evaluation import (
    PNG_SIGNATURE,
    SCORING,
    clean_params,
    confident_scores,
    embedded_images,
    memory_catalog,
    plot_datasets,
    predictions,
)
from tests.helpers.project import project_parameters

PARAMS = {"primary_metric": "macro_f1", "min_effect": 0.02, "significance_level": 0.05,
          "bootstrap": {"n_resamples": 500, "seed": 0}, "ece_bins": 15}


def arm(labels: list[str], right: np.ndarray, name: str, latency_ms: float) -> pd.DataFrame:
    """Predictions that are right where ``right`` is true, else the next label."""
    guesses = [label if ok else LABELS[(LABELS.index(label) + 1) % 4]
               for label, ok in zip(labels, right, strict=True)]
    return predictions(labels, confident_scores(guesses, 2.0), latency_ms=latency_ms, model=name)


@pytest.fixture(scope="module")
def labels() -> list[str]:
    return [LABELS[i % 4] for i in range(200)]


def test_b_clearly_better_wins(labels):
    rng = np.random.default_rng(0)
    a = arm(labels, rng.random(200) < 0.6, "original", 10.0)
    b = arm(labels, rng.random(200) < 0.9, "so8t", 12.0)
    results = compare_models(a, b, PARAMS)
    assert results["verdict"]["winner"] == "B"
    assert results["verdict"]["decision"] == "B is better"
    ci = results["bootstrap"]["macro_f1"]
    assert 0 < ci["low"] <= ci["difference"] <= ci["high"]
    assert results["mcnemar"]["p_value"] < 1e-6
    assert results["differences"]["accuracy"]["absolute"] == pytest.approx(
        b["correct"].mean() - a["correct"].mean())
    assert results["differences"]["latency_p50_ms"]["absolute"] == pytest.approx(2.0)
    assert results["differences"]["latency_p50_ms"]["relative"] == pytest.approx(0.2)
    # a constant +2 ms on every request: the paired test sees it for what it is
    assert results["latency_test"]["median_difference_ms"] == pytest.approx(2.0)
    assert results["latency_test"]["p_value"] < 1e-6
    json.dumps(results)  # JSON-ready for the catalog


def test_a_better_on_accuracy_is_judged_by_mcnemar(labels):
    rng = np.random.default_rng(1)
    a = arm(labels, rng.random(200) < 0.9, "original", 10.0)
    b = arm(labels, rng.random(200) < 0.5, "so8t", 10.0)
    results = compare_models(a, b, {**PARAMS, "primary_metric": "accuracy"})
    assert results["verdict"]["decision"] == "A is better"
    assert "McNemar" in results["verdict"]["evidence"]


def test_no_significant_difference(labels):
    right = np.random.default_rng(2).random(200) < 0.7
    same = compare_models(arm(labels, right, "a", 10.0), arm(labels, right, "b", 10.0), PARAMS)
    assert same["verdict"] == {**same["verdict"], "winner": None,
                               "decision": "no significant difference"}
    assert same["mcnemar"]["p_value"] == 1.0 and same["latency_test"]["p_value"] == 1.0
    # a real, significant gain that is smaller than the minimum effect asked for
    rng = np.random.default_rng(0)
    gain = compare_models(arm(labels, rng.random(200) < 0.6, "a", 10.0),
                          arm(labels, rng.random(200) < 0.9, "b", 10.0),
                          {**PARAMS, "min_effect": 0.9})
    assert gain["verdict"]["decision"] == "no significant difference"
    assert "minimum effect" in gain["verdict"]["reason"]


def test_the_verdict_is_stopped_by_the_unsafe_miss_guardrail(labels):
    """B is right far more often than A, but answers ALLOW to 15 REFUSE requests that A
    refuses: the primary rule passes, the guardrail stops B, and the report shows both."""
    labels = np.asarray(labels, dtype=object)
    # A: right on DENY and REFUSE, wrong (the next label) on every other ALLOW / ESCALATION
    pred_a = labels.copy()
    flaky = np.flatnonzero(np.isin(labels, ["ALLOW", "ESCALATION"]))[::2]
    pred_a[flaky] = [LABELS[LABELS.index(label) + 1] for label in labels[flaky]]
    # B: right everywhere but on 15 of the 50 REFUSE requests, which it answers ALLOW
    pred_b = labels.copy()
    pred_b[np.flatnonzero(labels == "REFUSE")[:15]] = "ALLOW"
    a = predictions(list(labels), confident_scores(list(pred_a), 2.0), model="original")
    b = predictions(list(labels), confident_scores(list(pred_b), 2.0), model="so8t")
    results = compare_models(a, b, PARAMS)
    verdict = results["verdict"]
    assert verdict["rules"]["primary_metric"]["passed"]
    assert results["bootstrap"]["macro_f1"]["low"] > PARAMS["min_effect"]
    unsafe = results["unsafe_miss_test"]
    assert (unsafe["n_unsafe"], unsafe["a_only_missed"], unsafe["b_only_missed"]) == (100, 0, 15)
    assert unsafe["p_value"] == pytest.approx(2 * 0.5**15)
    assert (verdict["winner"], verdict["stopped_by"]) == (None, ["unsafe_miss_guardrail"])
    assert verdict["decision"] == "stopped by the unsafe-miss guardrail"
    page = render_ab_test_report(results, b"\x89PNG fake chart")
    assert "Verdict rules" in page and "stopped by: unsafe_miss_guardrail" in page
    assert "15 missed by B only, 0 by A only" in page  # the guardrail's numbers
    assert "is significant and at least the minimum effect" in page  # the primary rule's

    # the same B without its misses passes both rules
    fixed = predictions(list(labels), confident_scores(list(labels), 2.0), model="so8t")
    assert compare_models(a, fixed, PARAMS)["verdict"]["winner"] == "B"


def test_unpaired_predictions_and_unknown_metrics_are_refused(labels):
    right = np.ones(200, dtype=bool)
    a, b = arm(labels, right, "a", 1.0), arm(labels, right, "b", 1.0)
    with pytest.raises(ValueError, match="not paired"):
        compare_models(a, b.iloc[::-1].reset_index(drop=True), PARAMS)
    with pytest.raises(ValueError, match="primary_metric 'f2'"):
        compare_models(a, b, {**PARAMS, "primary_metric": "f2"})


def test_an_arm_of_an_unknown_kind_is_refused(tmp_path):
    # refused where the arm is resolved (resolve_model_a / _b), before anything is scored
    with pytest.raises(ValueError, match="kind must be one of language_model, "
                                         "reference_classifier, got 'tfidf'"):
        resolve_model(tmp_path, tmp_path, {"path": None},
                      {"name": "x", "kind": "tfidf", "adapter": "catalog"})


def test_a_reference_classifier_arm_is_scored_without_a_language_model(project_root):
    rows = [json.loads(line) for line in
            (project_root / "data/01_raw/so8t_seed_dataset.jsonl").read_text().splitlines()]
    records = pd.DataFrame(rows[::40])
    classifier = fit_reference_classifier(
        [row["text"] for row in rows], [row["label"] for row in rows],
        project_parameters()["evaluation"]["reference_classifier"])
    # its spec's adapter is ignored: nothing to resolve, no directory to check
    arm = resolve_model(project_root / "nowhere", project_root / "nowhere", {"path": None},
                        {"name": "reference", "kind": "reference_classifier",
                         "adapter": "no/such/adapter"})
    predictions = score_arm(records, classifier, arm, {}, "quadruple")
    assert (predictions["model"] == "reference").all()
    assert predictions["base_model_dir"].iloc[0].startswith("TF-IDF char_wb")


@pytest.mark.parametrize("model_a", [
    {"name": "original", "kind": "language_model", "adapter": None},
    {"name": "reference", "kind": "reference_classifier", "adapter": None},
])
def test_ab_test_pipeline_slice(model_a, project_root, tiny_base_dir, tiny_adapter_dir,
                                tmp_path):
    rows = [json.loads(line) for line in
            (project_root / "data/01_raw/so8t_seed_dataset.jsonl").read_text().splitlines()]
    records = pd.DataFrame(rows)
    records["label_id"], records["source"] = records["label"].map(LABELS.index), "seed"
    test, train = records.iloc[::60], records.drop(index=records.index[::60])
    parameters = project_parameters()
    catalog = memory_catalog(
        inputs={
            "train_records": train, "test_records": test, "external_test_files": {},
            "embedded_base_model": tiny_base_dir, "so8t_adapter": tiny_adapter_dir,
            "params:base_model": {"path": None},
            "params:ab_test.model_a": model_a,
            "params:ab_test.model_b": {"name": "so8t", "kind": "language_model",
                                       "adapter": "catalog"},
            "params:evaluation.test_set": {"source": "split"},
            "params:evaluation.reference_classifier":
                parameters["evaluation"]["reference_classifier"],
            "params:data_processing.clean": clean_params(), "params:scoring": SCORING,
            "params:thinking_sft.format": "quadruple", "params:ab_test": PARAMS,
        },
        outputs=["evaluation_set", "evaluation_set_quarantine", "reference_classifier",
                 "ab_predictions_a", "ab_predictions_b", "ab_test_results", "ab_test_report"],
        extra=plot_datasets(tmp_path, "ab_test", ["comparison"]),
    )
    SequentialRunner().run(create_pipeline(), catalog)

    results = catalog.load("ab_test_results")
    assert results["n_samples"] == len(test)
    assert (results["models"]["A"]["name"], results["models"]["B"]["name"]) == (
        model_a["name"], "so8t")
    assert results["models"]["A"]["adapter_dir"] == ""
    assert results["models"]["B"]["adapter_dir"] == str(tiny_adapter_dir)
    if model_a["kind"] == "reference_classifier":
        # A's predictions are the fitted reference classifier's on the evaluation set
        classifier = catalog.load("reference_classifier")
        predicted_a = catalog.load("ab_predictions_a")["predicted"].tolist()
        assert predicted_a == [LABELS[i] for i in classifier.predict(test["text"].tolist())]
        assert results["models"]["A"]["base_model_dir"].startswith("TF-IDF char_wb")
    verdict = results["verdict"]
    assert set(verdict["rules"]) == {"primary_metric", "unsafe_miss_guardrail"}
    assert verdict["stopped_by"] == [name for name, rule in verdict["rules"].items()
                                     if not rule["passed"]]
    page = catalog.load("ab_test_report")
    assert results["verdict"]["decision"] in page
    [chart] = embedded_images(page)
    assert chart.startswith(PNG_SIGNATURE) and len(chart) > 5000
