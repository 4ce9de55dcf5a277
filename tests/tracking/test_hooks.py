"""The tracking hook's pure helpers and its config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from so8t_kedro.tracking.config import TrackingConfig
from so8t_kedro.tracking.hooks import (
    declares_kedro_mlflow_dataset,
    mlflow_name,
    numeric_leaves,
    project_sqlite_uri,
    text_leaf,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_numeric_leaves_flatten_numbers_and_leave_text_and_lists_out():
    data = {"verdict": {"winner": "A", "rules": {"primary_metric": {"passed": True}}},
            "models": {"A": {"macro_f1": 0.8, "n": 3}}, "labels": ["ALLOW"],
            "latency ms (p50)": 1.5}
    assert numeric_leaves(data, "ab") == {
        "ab.verdict.rules.primary_metric.passed": 1.0,
        "ab.models.A.macro_f1": 0.8,
        "ab.models.A.n": 3.0,
        "ab.latency ms _p50_": 1.5,  # characters MLflow refuses in a metric name replaced
    }


def test_a_transcoded_dataset_name_becomes_a_valid_mlflow_name():
    assert mlflow_name("kedro.load_version.ab_test_comparison@png") == \
        "kedro.load_version.ab_test_comparison_png"
    assert mlflow_name("figures/evaluation_confusion_matrix") == \
        "figures/evaluation_confusion_matrix"


def test_text_leaf_reads_a_dotted_path():
    data = {"verdict": {"decision": "A is better"}, "primary_metric": "macro_f1"}
    assert text_leaf(data, "verdict.decision") == "A is better"
    assert text_leaf(data, "primary_metric") == "macro_f1"
    assert text_leaf(data, "verdict.missing") is None
    assert text_leaf(data, "primary_metric.deeper") is None


def test_a_relative_sqlite_store_is_taken_from_the_project_folder(tmp_path):
    assert project_sqlite_uri("sqlite:///data/mlflow/mlflow.db", tmp_path) == \
        f"sqlite:///{tmp_path.as_posix()}/data/mlflow/mlflow.db"
    absolute = f"sqlite:///{tmp_path}/mlflow.db"
    assert project_sqlite_uri(absolute, Path("/elsewhere")) == absolute
    assert project_sqlite_uri("http://127.0.0.1:5000", tmp_path) == "http://127.0.0.1:5000"


def base_tracking() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_tracking.yml").read_text())


def test_the_shipped_config_validates_and_tracking_off_needs_only_its_switch():
    config = TrackingConfig.from_params(base_tracking())
    assert config.enabled and config.models["so8t_adapter"] == "so8t-adapter"
    assert TrackingConfig.from_params({"tracking": {"enabled": False}}) is None
    assert TrackingConfig.from_params({"tracking": {"enabled": "false"}}) is None


def test_every_html_report_in_the_catalog_is_logged():
    entries = {}
    for path in (PROJECT_ROOT / "conf/base").glob("catalog*.yml"):
        entries.update(yaml.safe_load(path.read_text()))
    html = {name for name, entry in entries.items()
            if str(entry.get("filepath", "")).endswith(".html")}
    assert html == set(TrackingConfig.from_params(base_tracking()).reports)
    assert {"evaluation_report", "ab_test_report", "export_report"} <= html


def test_kedro_mlflow_datasets_are_found_in_entries_and_factories_but_not_in_ours():
    entries = {}
    for path in (PROJECT_ROOT / "conf/base").glob("catalog*.yml"):
        entries.update(yaml.safe_load(path.read_text()))
    assert not declares_kedro_mlflow_dataset(entries)
    assert declares_kedro_mlflow_dataset(
        {**entries, "{name}_history": {"type": "kedro_mlflow.io.metrics.MlflowMetricHistoryDataset"}})


def test_an_unknown_key_is_an_error_naming_it():
    params = base_tracking()
    params["tracking"]["metrix"] = []
    with pytest.raises(ValueError, match="metrix"):
        TrackingConfig.from_params(params)
    with pytest.raises(ValueError, match="enabled"):
        TrackingConfig.from_params({"tracking": {}})
