"""The ab_test pipeline: paired comparison, the three verdicts, the report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from kedro.runner import SequentialRunner

from so8t_kedro.labels import LABELS
from so8t_kedro.pipelines.ab_test import create_pipeline
from so8t_kedro.pipelines.ab_test.nodes import compare_models
from tests.pipelines.evaluation.helpers import (
    confident_scores,
    memory_catalog,
    plot_datasets,
    predictions,
)
from tests.pipelines.evaluation.test_evaluation_pipeline import (
    CLEAN,
    PNG_SIGNATURE,
    SCORING,
    embedded_images,
)

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


def test_unpaired_predictions_and_unknown_metrics_are_refused(labels):
    right = np.ones(200, dtype=bool)
    a, b = arm(labels, right, "a", 1.0), arm(labels, right, "b", 1.0)
    with pytest.raises(ValueError, match="not paired"):
        compare_models(a, b.iloc[::-1].reset_index(drop=True), PARAMS)
    with pytest.raises(ValueError, match="primary_metric 'f2'"):
        compare_models(a, b, {**PARAMS, "primary_metric": "f2"})


def test_ab_test_pipeline_slice(project_root, tiny_base_dir, tiny_adapter_dir, tmp_path):
    rows = [json.loads(line) for line in
            (project_root / "data/01_raw/so8t_seed_dataset.jsonl").read_text().splitlines()]
    test = pd.DataFrame(rows[::60])
    test["label_id"], test["source"] = test["label"].map(LABELS.index), "seed"
    catalog = memory_catalog(
        inputs={
            "test_records": test, "external_test_files": {},
            "embedded_base_model": tiny_base_dir, "so8t_adapter": tiny_adapter_dir,
            "params:base_model": {"path": None},
            "params:ab_test.model_a": {"name": "original", "adapter": None},
            "params:ab_test.model_b": {"name": "so8t", "adapter": "catalog"},
            "params:evaluation.test_set": {"source": "split"},
            "params:data_processing.clean": CLEAN, "params:scoring": SCORING,
            "params:thinking_sft.format": "quadruple", "params:ab_test": PARAMS,
        },
        outputs=["evaluation_set", "evaluation_set_quarantine", "ab_predictions_a",
                 "ab_predictions_b", "ab_test_results", "ab_test_report"],
        extra=plot_datasets(tmp_path, "ab_test", ["comparison"]),
    )
    SequentialRunner().run(create_pipeline(), catalog)

    results = catalog.load("ab_test_results")
    assert results["n_samples"] == len(test)
    assert (results["models"]["A"]["name"], results["models"]["B"]["name"]) == ("original", "so8t")
    assert results["models"]["A"]["adapter_dir"] == ""
    assert results["models"]["B"]["adapter_dir"] == str(tiny_adapter_dir)
    verdict = results["verdict"]
    assert verdict["decision"] == {"A": "A is better", "B": "B is better",
                                   None: "no significant difference"}[verdict["winner"]]
    page = catalog.load("ab_test_report")
    assert results["verdict"]["decision"] in page
    [chart] = embedded_images(page)
    assert chart.startswith(PNG_SIGNATURE) and len(chart) > 5000
