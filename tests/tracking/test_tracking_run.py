"""A short `kedro run` with tracking on, read back from its MLflow store; and with it off.

The tracked run (``tracked_run``, conftest.py) serves every assertion: its parameters, the
loss history with one point per optimiser step, the artifacts, the HPO trials as nested
runs, the registered adapter and its model card.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from so8t_kedro.training.loop import LOSS_TERMS


@pytest.mark.slow
def test_a_tracked_run_logs_params_step_losses_artifacts_and_trials(tracked_run: dict):
    client, run = tracked_run["client"], tracked_run["run"]
    assert run.info.status == "FINISHED"
    for notice in ("Add type hints", "register_new_resolver", "is set as a tag"):
        assert notice not in tracked_run["log"]  # kedro-mlflow's and MLflow's, dropped
    # every node's parameters, flattened
    assert run.data.params["training.lora.r"] == "4"
    assert run.data.params["base_model.embedded.hidden_size"] == "64"
    assert run.data.tags["kedro.load_version.thinking_sft_dataset"] == \
        "2026-01-01T00.00.00.000Z"
    # one point per optimiser step for each loss term and the throughput, steps 1..N
    summary = Path(client.download_artifacts(run.info.run_id,
                                             "metrics/training_summary.json"))
    steps = json.loads(summary.read_text())["optimizer_steps"]
    assert steps >= 2
    for key in (*LOSS_TERMS, "lr", "tokens_per_second", "samples_per_second"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == list(range(1, steps + 1)), key
    assert all(m.value > 0 for m in client.get_metric_history(run.info.run_id,
                                                               "tokens_per_second"))
    assert run.data.metrics["training_summary.optimizer_steps"] == steps
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/learning_curve_plot.png",
            "figures/hpo_optimization_history_plot.png"} <= figures
    # the search's trials, nested under the run, with their parameters and objective
    children = tracked_run["children"]
    assert sorted(c.data.tags["optuna.trial"] for c in children) == ["0", "1"]
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == run.info.run_id
        assert {"pet_lambda", "safety_weight", "cmd_weight", "temperature"} <= \
            set(child.data.params)
        if child.data.tags["optuna.state"] == "COMPLETE":
            assert child.info.status == "FINISHED"
            assert "value" in child.data.metrics


@pytest.mark.slow
def test_the_adapter_is_registered_with_its_model_card(tracked_run: dict):
    client, run, project = tracked_run["client"], tracked_run["run"], tracked_run["project"]
    [version] = client.search_model_versions("name='so8t-adapter'")
    assert version.run_id == run.info.run_id
    [folder] = (project / "data/06_models/so8t_adapter").glob("*/so8t_adapter")
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert version.description == card
    front, body = card.removeprefix("---\n").split("\n---\n", 1)
    metadata = yaml.safe_load(front)
    assert metadata["library_name"] == "peft"
    assert metadata["license"] is None  # left for the owner
    assert "| ALLOW |" in body  # training data counts per label
    assert "| training.lora.r | `4` |" in body  # the run's value (--params), not conf's
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "models/so8t_adapter")}
    assert {"models/so8t_adapter/so8t_gates.safetensors",
            "models/so8t_adapter/README.md"} <= logged


def run_in_process(project: Path, monkeypatch, runtime_params: dict | None = None,
                   **run_args) -> None:
    """``session.run(**run_args)`` in this process (the CLI's imports cost seconds)."""
    import sys

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    # bootstrap_project edits sys.path and PYTHONPATH; give both back afterwards.
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=runtime_params) as session:
        session.run(**run_args)


@pytest.mark.slow
def test_a_failed_run_is_marked_failed_with_its_error(tracked_run: dict, monkeypatch):
    client = tracked_run["client"]
    with pytest.raises(Exception, match="no-such-version"):
        run_in_process(tracked_run["project"], monkeypatch, node_names=["plot_learning_curve"],
                       load_versions={"training_history": "no-such-version"})
    [failed] = client.search_runs([tracked_run["run"].info.experiment_id],
                                  filter_string="attributes.status = 'FAILED'")
    assert "no-such-version" in failed.data.tags["error"]


@pytest.mark.slow
def test_tracking_off_logs_nothing_and_runs_as_usual(tracked_run: dict, monkeypatch):
    project, client = tracked_run["project"], tracked_run["client"]
    experiment_id = tracked_run["run"].info.experiment_id
    runs_before = len(client.search_runs([experiment_id]))
    store = project / "data/mlflow/mlflow.db"
    touched = store.stat().st_mtime_ns
    plots = project / "data/08_reporting/training/learning_curve.png"
    versions_before = len(list(plots.glob("*/*")))
    run_in_process(project, monkeypatch, {"tracking": {"enabled": False}},
                   node_names=["plot_learning_curve"])
    assert len(list(plots.glob("*/*"))) == versions_before + 1  # the run did its work
    assert len(client.search_runs([experiment_id])) == runs_before
    assert store.stat().st_mtime_ns == touched
