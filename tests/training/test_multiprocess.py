"""Training under ``accelerate launch`` with two CPU processes (DDP over gloo).

The training pipeline itself (``accelerate launch ... -m kedro run --pipelines=training``) in
a project copy: the schedule of one process with the same global batch, one set of outputs
written by the main process, identical weights, a SIGTERM to one process stopping both, an
exact resume. The loop through a worker that counts what only instrumentation sees: the
losses logged are the mean over processes, and one gradient all-reduce runs per optimiser
step, not one per micro-batch.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from kedro.io import DataCatalog
from kedro.pipeline import Node, Pipeline
from kedro_datasets.json import JSONDataset

from so8t_kedro.hooks import LaunchedProcessHooks
from so8t_kedro.training.checkpoint import load
from so8t_kedro.training.loop import LOSS_TERMS
from tests.helpers.kedro_cli import kedro, ok
from tests.helpers.project import SFT_VERSION, project_parameters, write_sft_samples

WORKER = Path(__file__).with_name("_ddp_worker.py")
PROCESSES = 2
SESSIONS = Path(project_parameters()["training"]["checkpoint"]["dir"])  # in a project copy
# A version folder of a versioned dataset (Kedro's save-version timestamp).
VERSION = re.compile(r"\d{4}-\d\d-\d\dT\d\d\.\d\d\.\d\d\.\d{3}Z")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """``accelerate launch`` of ``args`` on two CPU processes; returns the launcher.

    accelerate's ``--cpu`` starts several processes only through MPI (``mpirun``); its
    torchrun launcher (``--multi_gpu``) with ``ACCELERATE_USE_CPU`` starts them on a machine
    without MPI, and the processes then form a gloo group (``DistributedType.MULTI_CPU``).
    """
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", str(PROCESSES), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), *args]
    env = {**os.environ, **env, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    stdout, stderr = process.communicate(timeout=timeout)
    return stdout + stderr


# ------------------------------------------------------------------ the training pipeline

def params_option(params: dict) -> str:
    return "--params=" + ",".join(f"{key}={value}" for key, value in params.items())


@pytest.fixture
def pipeline_params(tiny_base_dir) -> dict:
    """The tiny base as ``base_model.path`` (params:training as it is, no embedded recipe),
    global batch 8 (4 per process), accumulation 2: 24 samples give 3 micro-batches and 2
    optimiser steps an epoch, 8 steps in 4 epochs. The embedded base, built by the pipeline
    all the same, is made small."""
    return {
        "base_model.path": tiny_base_dir,
        "base_model.embedded.vocab_size": 1200, "base_model.embedded.hidden_size": 64,
        "base_model.embedded.intermediate_size": 128, "base_model.embedded.pretrain.epochs": 1,
        "training.quantization": "null", "training.epochs": 4, "training.batch_size": 4,
        "training.gradient_accumulation_steps": 2, "training.warmup_ratio": 0.3,
        "training.learning_rate": 5e-3, "training.max_seq_length": 512,
        "training.lora.r": 4, "training.lora.alpha": 8,
        "training.progress.show_progress_bar": "false",
    }


def launch_training(project: Path, params: dict) -> subprocess.Popen:
    """The training pipeline under ``accelerate launch``; temporary files go to ``project/tmp``
    (a process other than the main one writes its catalog outputs there)."""
    (project / "tmp").mkdir(exist_ok=True)
    env = {"KEDRO_DISABLE_TELEMETRY": "1", "COLUMNS": "200", "TMPDIR": str(project / "tmp")}
    return accelerate_launch("-m", "kedro", "run", "--pipelines=training",
                             params_option(params), cwd=project, env=env)


def saved_versions(project: Path) -> dict[str, set[str]]:
    """Each versioned dataset under data/ (its path) -> the versions saved in it."""
    versions: dict[str, set[str]] = {}
    for folder in (project / "data").rglob("*"):
        if folder.is_dir() and VERSION.fullmatch(folder.name):
            dataset = str(folder.parent.relative_to(project))
            versions.setdefault(dataset, set()).add(folder.name)
    return versions


def latest(project: Path, dataset: str) -> Path:
    """The newest version of a training report (versions sort by time)."""
    return max((project / "data/08_reporting/training").glob(f"{dataset}/*/*"))


def history(project: Path) -> pd.DataFrame:
    return pd.read_json(latest(project, "training_history.jsonl"), lines=True)


def session(project: Path, name: str) -> Path:
    return project / SESSIONS / name


def rank_pids(launcher: subprocess.Popen, deadline: float) -> dict[int, int]:
    """The launched processes' pids by rank (torchrun sets RANK in each one's environment)."""
    while time.monotonic() < deadline and launcher.poll() is None:
        found = {}
        for child in psutil.Process(launcher.pid).children(recursive=True):
            try:
                if "kedro" in child.cmdline() and "RANK" in child.environ():
                    found[int(child.environ()["RANK"])] = child.pid
            except psutil.NoSuchProcess:
                continue
        if len(found) == PROCESSES:
            return found
        time.sleep(0.1)
    raise AssertionError(finish(launcher)[-3000:])


@pytest.mark.slow
def test_training_pipeline_under_two_processes(kedro_project, sft_samples, pipeline_params):
    """One test, so that the uninterrupted two-process run is the reference both for one
    process and for the stopped and resumed runs (each launch costs ~15 s)."""
    project = kedro_project
    write_sft_samples(project, sft_samples)
    launcher = launch_training(project, pipeline_params)
    output = finish(launcher)
    assert launcher.returncode == 0, output[-3000:]
    ddp = history(project)
    assert ddp["step"].tolist() == list(range(1, 9))
    summary = json.loads(latest(project, "training_summary.json").read_text())
    # Both processes ended with the same weights (checked in the node, recorded here).
    digests = summary["trainable_weights_sha256"]
    assert len(digests) == PROCESSES and len(set(digests)) == 1
    # One set of outputs, by the main process: every versioned dataset the run wrote has one
    # version (two processes would write two, or collide on one), one training session;
    # the other process's outputs went to its own folder, removed at its exit.
    versions = saved_versions(project)
    written = {dataset: v for dataset, v in versions.items() if SFT_VERSION not in v}
    assert {Path(d).name for d in written} >= {
        "embedded_base_model", "so8t_adapter", "training_history.jsonl",
        "training_summary.json", "learning_curve.png", "run_summary.json"}
    assert all(len(v) == 1 for v in written.values()), written
    assert len(set.union(*written.values())) == 1
    [finished] = (project / SESSIONS).iterdir()
    assert (finished / "checkpoint_final").is_dir()
    assert list(finished.glob("progress_logs/*"))
    assert "accelerate launch: its catalog outputs go to" in output
    assert not list((project / "tmp").glob("so8t-rank*"))

    # One process with the same global batch: the same learning rate at every step.
    ok(kedro(project, "run", "--pipelines=training",
                      params_option({**pipeline_params, "training.batch_size": 8})))
    one = history(project)
    assert one["step"].tolist() == ddp["step"].tolist()
    assert ddp["lr"].tolist() == pytest.approx(one["lr"].tolist(), rel=1e-12)
    assert ddp["tokens"].tolist() == one["tokens"].tolist()

    # A SIGTERM to the process that is not the main one, once the first epoch's checkpoint
    # is written, stops both after the same micro-batch, with one emergency checkpoint.
    sessions_before = set((project / SESSIONS).iterdir())
    launcher = launch_training(project, pipeline_params)
    deadline = time.monotonic() + 240
    pids = rank_pids(launcher, deadline)
    while launcher.poll() is None and time.monotonic() < deadline and not any(
            (s / "checkpoint_epoch_1").is_dir()
            for s in set((project / SESSIONS).iterdir()) - sessions_before):
        time.sleep(0.01)
    os.kill(pids[1], signal.SIGTERM)
    output = finish(launcher)
    # Each process stopped in the loop (the node logs it with its rank) and ended by SIGTERM:
    # 128 + 15 from the node, or -15 when torchrun, seeing the other one gone, terminated it
    # on its way out (after the checkpoint: the loop waits for every process after saving).
    for rank in range(PROCESSES):
        assert f"Process {rank} of 2: Training interrupted by SIGTERM" in output, output[-3000:]
    ended = dict(re.findall(r"rank\s*: (\d) \(local_rank: \d\)\s*exitcode\s*: (-?\d+)", output))
    assert set(ended) == {"0", "1"} and set(ended.values()) <= {"143", "-15"}, ended
    [stopped] = set((project / SESSIONS).iterdir()) - sessions_before
    [emergency] = stopped.glob("checkpoint_emergency_*")
    state = load(emergency)
    assert 2 <= state.step < 8
    assert not (stopped / "checkpoint_final").exists()

    # A resume under two processes repeats the uninterrupted run's losses and schedule.
    launcher = launch_training(project, {**pipeline_params, "training.resume": "latest"})
    output = finish(launcher)
    assert launcher.returncode == 0, output[-3000:]
    resumed = history(project)
    assert resumed["step"].tolist() == list(range(state.step + 1, 9))
    for term in (*LOSS_TERMS, "lr"):
        assert resumed[term].tolist() == pytest.approx(ddp[term][state.step:].tolist(),
                                                       abs=1e-6), term
    assert (stopped / "checkpoint_final").is_dir()
    summary = json.loads(latest(project, "training_summary.json").read_text())
    assert project / summary["resumed_from"] == emergency
    # ... and ends with the uninterrupted run's weights, bit for bit, in both processes.
    assert summary["trainable_weights_sha256"] == digests


@pytest.mark.parametrize("rank", ["0", "1"])
def test_only_the_main_process_writes_the_catalog(rank, tmp_path, monkeypatch, caplog):
    """The hook alone: a process of rank > 0 saves the pipeline's outputs, as the same
    dataset type, unversioned, into a folder of its own (quietly: no catalog warning per
    entry); the main process's catalog stays as it is."""
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    caplog.set_level(logging.WARNING, logger="kedro.io.data_catalog")
    report = tmp_path / "data/report.json"
    catalog = DataCatalog.from_config({
        "report": {"type": "json.JSONDataset", "filepath": str(report), "versioned": True},
        "samples": {"type": "json.JSONDataset", "filepath": str(tmp_path / "samples.json")}})
    pipeline = Pipeline([Node(len, "samples", "report", name="count")])
    LaunchedProcessHooks().before_pipeline_run(pipeline, catalog)
    catalog.save("report", 3)
    assert catalog.load("report") == 3
    if rank == "0":
        assert len(list(report.glob("*/report.json"))) == 1  # where the catalog says
        assert not list((tmp_path / "tmp").iterdir())
    else:
        assert not report.exists()
        assert isinstance(catalog["report"], JSONDataset)
        [folder] = (tmp_path / "tmp").glob("so8t-rank1-*")
        assert json.loads((folder / "report/report.json").read_text()) == 3
    assert "Replacing dataset" not in caplog.text
    # An input the run does not produce is read where it lives, in every process.
    assert catalog["samples"]._filepath.parent == tmp_path


# ------------------------------------------------------------- the loop, instrumented

@pytest.fixture
def samples_path(sft_samples, tmp_path) -> Path:
    path = tmp_path / "samples.jsonl"
    sft_samples.to_json(path, orient="records", lines=True, force_ascii=False)
    return path


@pytest.mark.slow
def test_logged_losses_are_the_mean_over_processes_and_one_all_reduce_per_step(
        tiny_base_dir, samples_path, training_params, tmp_path):
    """Global batch 8 (4 per process), accumulation 2: 3 micro-batches and 2 optimiser steps
    an epoch, 4 steps in 2 epochs."""
    training_params.update(epochs=2, batch_size=4, gradient_accumulation_steps=2,
                           warmup_ratio=0.3)
    out = tmp_path / "ddp"
    out.mkdir()
    (out / "params.json").write_text(json.dumps(training_params))
    launcher = accelerate_launch(str(WORKER), str(tiny_base_dir), str(samples_path),
                                 str(out / "params.json"), str(out), cwd=tmp_path,
                                 env={"PYTHONPATH": str(Path(__file__).parents[2] / "src")})
    output = finish(launcher)
    assert launcher.returncode == 0, output[-3000:]
    main, other = (json.loads((out / f"rank{r}.json").read_text()) for r in range(PROCESSES))
    logged = main["history"]
    assert logged["step"] == [1, 2, 3, 4]
    assert other["history"] == logged
    # Each term is the mean over processes of each one's mean over its micro-batches.
    micro = {r["rank"]: r["micro_terms"] for r in (main, other)}
    groups = [(0, 2), (2, 3), (3, 5), (5, 6)]  # micro-batches of each step, in call order
    for step, (start, end) in enumerate(groups):
        for k, term in enumerate(LOSS_TERMS):
            per_rank = [sum(m[k] for m in micro[r][start:end]) / (end - start)
                        for r in range(PROCESSES)]
            assert logged[term][step] == pytest.approx(sum(per_rank) / PROCESSES, abs=1e-6)
    # One gradient all-reduce per optimiser step (no_sync inside the accumulation).
    rounds = [r for r in main["reductions"] if r == 0]
    assert len(rounds) == 4 and len(main["micro_terms"]) == 6
