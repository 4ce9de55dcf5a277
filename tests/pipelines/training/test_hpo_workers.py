"""Two `kedro run --pipelines=training --tags=hpo` workers on one study (a SQLite file)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from so8t_kedro.models.bundles import BaseModelBundle
from so8t_kedro.models.loading import load_base_model
from so8t_kedro.pipelines.training.nodes import attach_reference_scores
from tests.helpers.optuna_study import running_study_trials
from tests.helpers.sft import train_records

pytestmark = pytest.mark.slow

STUDY = "so8t_thinking"
N_TRIALS = 3
# Trials of 150 steps (about 9 s each on an idle 2-core machine) on the tiny model, so that
# the first worker cannot finish the study before the second one's start-up is over, even
# on a loaded machine (with 3-step trials it did, in CI); no pruning (n_warmup_steps = the
# budget), so every trial that runs completes; heartbeats of 1 s so that a killed worker's
# trial goes stale within seconds; no MLflow run (two runs at once would share its SQLite
# store too).
PARAMS = ",".join([
    "tracking.enabled=false", "hpo.enabled=true", f"hpo.n_trials={N_TRIALS}",
    "hpo.n_startup_trials=3", "hpo.steps_per_trial=150", "hpo.eval_every_steps=5",
    "hpo.pruner.n_warmup_steps=150", "base_model.embedded_training.epochs=30",
    "hpo.heartbeat.interval_seconds=1", "hpo.heartbeat.grace_period_seconds=2",
    "training.batch_size=4", "training.max_seq_length=512", "training.lora.r=4",
    "training.lora.alpha=8", "training.checkpoint.interval_seconds=0",
    "training.progress.show_progress_bar=false",
])


@pytest.fixture
def hpo_project(kedro_project, sft_samples, tiny_base_dir) -> Path:
    """The project copy with the training samples of the tiny SFT set and the tiny base model
    saved as the catalog's latest versions, as an earlier run leaves them for the `hpo`
    nodes."""
    from kedro.framework.session import KedroSession

    with KedroSession.create(kedro_project) as session:
        catalog = session.load_context().catalog
        samples = attach_reference_scores(
            sft_samples, train_records(sft_samples),
            catalog.load("params:evaluation.reference_classifier"),
            catalog.load("params:training.distillation"))
        catalog.save("training_samples", samples)
        catalog.save("embedded_base_model", BaseModelBundle(*load_base_model(tiny_base_dir)))
    return kedro_project


def saved_versions(project: Path, relative_path: str) -> list[str]:
    return sorted(p.name for p in (project / relative_path).iterdir())


def worker(project: Path) -> subprocess.Popen:
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1"}
    env.pop("KEDRO_LOGGING_CONFIG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "kedro", "run", "--pipelines=training", "--tags=hpo",
         f"--params={PARAMS}"],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def study_trials(project: Path) -> list[optuna.trial.FrozenTrial]:
    path = project / "data/06_models/hpo/optuna_studies.db"
    if not path.exists():
        return []
    return running_study_trials(f"sqlite:///{path}", STUDY)


def test_two_workers_share_one_study_and_survive_a_killed_one(hpo_project):
    samples_path = "data/05_model_input/training_samples.parquet"
    fixture_samples = saved_versions(hpo_project, samples_path)
    first, second = worker(hpo_project), worker(hpo_project)
    # Each worker runs one trial at a time: when two trials run (and have reported), one is
    # the second worker's, which is then killed mid-trial.
    deadline = time.monotonic() + 300
    while True:
        running = [t for t in study_trials(hpo_project) if t.state == TrialState.RUNNING
                   and len(t.intermediate_values) >= 1]
        if len(running) == 2:
            break
        for process in (first, second):
            if process.poll() is not None:
                raise AssertionError("a worker ended before the kill:\n"
                                     + process.communicate()[0][-3000:])
        assert time.monotonic() < deadline, "two trials never ran at once"
        time.sleep(0.1)
    second.send_signal(signal.SIGKILL)
    second.wait(timeout=30)

    output, _ = first.communicate(timeout=600)
    assert first.returncode == 0, output[-3000:]

    trials = study_trials(hpo_project)
    states = [t.state for t in trials]
    # Exactly n_trials finished; the killed worker's trial failed by heartbeat and retried
    # (by the surviving worker) with its parameters; nothing else ran.
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == N_TRIALS
    assert states.count(TrialState.FAIL) == 1 and TrialState.RUNNING not in states
    [failed] = [t for t in trials if t.state == TrialState.FAIL]
    [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == failed.number]
    assert retry.state == TrialState.COMPLETE and retry.params == failed.params
    # No trial ran twice: every other parameter set is distinct and run once.
    finished = [t for t in trials if t.state != TrialState.FAIL]
    assert len({tuple(sorted(t.params.items())) for t in finished}) == N_TRIALS
    # The surviving worker's best parameters are the whole study's.
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    [saved] = (hpo_project / "data/06_models/hpo/best_params.json").glob("*/best_params.json")
    assert json.loads(saved.read_text()) == best.params
    # The workers trained on the persisted samples and wrote none: two workers saving them
    # in sessions begun in the same millisecond collided on Kedro's save version.
    assert saved_versions(hpo_project, samples_path) == fixture_samples
