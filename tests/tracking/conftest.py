"""``tracked_run``: one tiny tracked `kedro run`, shared by the tests of this folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.helpers.kedro_cli import kedro, ok
from tests.helpers.project import write_sft_samples

# A smaller embedded model, one epoch, two search trials of two steps each.
TINY = ("base_model.embedded.vocab_size=1200,base_model.embedded.hidden_size=64,"
        "base_model.embedded.intermediate_size=128,base_model.embedded.pretrain.epochs=1,"
        "base_model.embedded_training.epochs=1,training.max_seq_length=512,"
        "training.lora.r=4,training.lora.alpha=8,training.batch_size=8,"
        "hpo.enabled=true,hpo.n_trials=2,hpo.steps_per_trial=2,hpo.eval_every_steps=2,"
        "hpo.n_startup_trials=1,hpo.pruner.n_startup_trials=1,hpo.pruner.n_warmup_steps=1")


def tracking_uri(project: Path) -> str:
    return f"sqlite:///{project}/data/mlflow/mlflow.db"


@pytest.fixture(scope="package")
def tracked_run(tmp_path_factory, project_root: Path, sft_samples: pd.DataFrame) -> dict:
    """The training pipeline run once from the CLI, tracked into the project copy's own
    store (conf/base as shipped: tracking on)."""
    project = tmp_path_factory.mktemp("tracked")
    shutil.copytree(project_root / "conf", project / "conf",
                    ignore=shutil.ignore_patterns("local"))
    (project / "conf/local").mkdir()
    shutil.copy(project_root / "pyproject.toml", project)
    shutil.copy(project_root / ".telemetry", project)
    (project / "src").mkdir()
    write_sft_samples(project, sft_samples)
    log = ok(kedro(project, "run", "--pipelines=training", f"--params={TINY}"))
    client = MlflowClient(tracking_uri(project))
    experiment = client.get_experiment_by_name("so8t_kedro")
    runs = client.search_runs([experiment.experiment_id], order_by=["start_time ASC"])
    [parent] = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    return {"project": project, "client": client, "run": parent, "log": log,
            "children": [run for run in runs if run is not parent]}


