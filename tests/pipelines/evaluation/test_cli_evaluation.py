"""The README's evaluation commands from a shell: train (tiny), evaluate, A/B test, and
re-run single evaluation nodes on the persisted predictions without re-scoring; then the
training's own nodes alone on what that training persisted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.kedro_cli import kedro, ok
from tests.helpers.project import use_seed_subset


def expected_decision(verdict: dict) -> str:
    """The decision the verdict's winner and failed rules call for."""
    if verdict["winner"] is not None:
        return f"{verdict['winner']} is better"
    if "primary_metric" in verdict["stopped_by"]:
        return "no significant difference"
    return "stopped by the unsafe-miss guardrail"

# A smaller embedded model and one epoch, so the whole chain takes a minute or two on CPU.
TINY = ("base_model.embedded.hidden_size=64,base_model.embedded.intermediate_size=128,"
        "base_model.embedded.pretrain.epochs=1,training.epochs=1,training.quantization=null,"
        # the embedded recipe is merged over `training`: its epochs win over training.epochs
        "base_model.embedded_training.epochs=1,"
        "training.lora.r=4,training.lora.alpha=8,training.max_seq_length=512")


def versions(project: Path, relative: str) -> list[Path]:
    return sorted((project / relative).glob("*/*"))


@pytest.mark.slow
def test_evaluation_and_ab_test_after_training(kedro_project: Path):
    assert use_seed_subset(kedro_project, 100) == 400
    ok(kedro(kedro_project, "run", "--pipelines=data_processing,thinking_sft,training",
             f"--params={TINY}"))
    ok(kedro(kedro_project, "run", "--pipelines=evaluation"))
    [metrics_file] = versions(kedro_project, "data/08_reporting/evaluation/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    test_lines = versions(kedro_project, "data/03_primary/four_class_test.jsonl")[0]
    assert metrics["n_samples"] == len(test_lines.read_text().splitlines())
    assert metrics["unsafe_miss_rate"] == metrics["false_positive_rate"]
    # the reference classifier beside the model, on the same requests, saved as a model
    reference = metrics["baselines"]["reference_classifier"]
    assert reference["n_samples"] == metrics["n_samples"]
    assert metrics["versus_reference"]["macro_f1"]["reference"] == reference["macro_f1"]
    [reference_file] = versions(kedro_project, "data/06_models/reference_classifier.skops")
    [report] = versions(kedro_project, "data/08_reporting/evaluation/evaluation_report.html")
    page = report.read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "the reference classifier on macro-F1" in page

    ok(kedro(kedro_project, "run", "--pipelines=ab_test"))
    [results] = versions(kedro_project, "data/08_reporting/ab_test/ab_test_results.json")
    verdict = json.loads(results.read_text())["verdict"]
    assert verdict["decision"] == expected_decision(verdict)

    # The reference classifier as model A, the version the evaluation saved (the fit node
    # is left out, so --load-versions picks the model). Each arm's model reference lives in
    # memory: the run starts at the nodes that resolve it.
    ok(kedro(kedro_project, "run", "--pipelines=ab_test",
             "--to-nodes=compare_models", "--from-nodes=resolve_model_a,resolve_model_b",
             f"--load-versions=reference_classifier:{reference_file.parent.name}",
             "--params=ab_test.model_a.kind=reference_classifier,ab_test.model_a.name=reference"))
    newest = versions(kedro_project, "data/08_reporting/ab_test/ab_test_results.json")[-1]
    models = json.loads(newest.read_text())["models"]
    assert models["A"]["name"] == "reference"
    assert models["A"]["base_model_dir"].startswith("TF-IDF")

    # Metrics and report again, from the persisted predictions: nothing is scored.
    log = ok(kedro(kedro_project, "run",
                   "--nodes=compute_evaluation_metrics,render_evaluation_report"))
    assert "Running node: score_" not in log
    assert len(versions(kedro_project, "data/08_reporting/evaluation/metrics.json")) == 2

    # Score an explicitly chosen adapter version (resolved into the in-memory model
    # reference the scoring node takes).
    [adapter] = versions(kedro_project, "data/06_models/so8t_adapter")
    ok(kedro(kedro_project, "run",
             "--nodes=resolve_evaluation_model,score_validation_and_evaluation_sets",
             f"--load-versions=so8t_adapter:{adapter.parent.name}"))
    predictions = versions(kedro_project,
                           "data/07_model_output/evaluation/evaluation_predictions.jsonl")
    assert len(predictions) == 2
    first_row = json.loads(predictions[-1].read_text().splitlines()[0])
    assert first_row["adapter_dir"].endswith(f"{adapter.parent.name}/so8t_adapter")

    # The training's nodes alone, on the samples and base the training run persisted: the
    # search (off: it reads its inputs and returns), then the adapter again, which matches
    # the first run's to the bit (same samples, same seed, a fresh start).
    log = ok(kedro(kedro_project, "run", "--nodes=tune_hyperparameters"))
    assert "Hyperparameter search is off" in log
    ok(kedro(kedro_project, "run", "--nodes=train_so8t_adapter", f"--params={TINY}"))
    assert len(versions(kedro_project, "data/06_models/so8t_adapter")) == 2
    first, again = (json.loads(path.read_text()) for path in
                    versions(kedro_project, "data/08_reporting/training/training_summary.json"))
    assert again["trainable_weights_sha256"] == first["trainable_weights_sha256"]
