"""The training loop under ``accelerate launch`` with two CPU processes (DDP over gloo)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from so8t_kedro.training.checkpoint import load
from so8t_kedro.training.loop import LOSS_TERMS, train_so8t

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("_ddp_worker.py")
PROCESSES = 2

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(base_dir: Path, samples_path: Path, params: dict, out: Path) -> subprocess.Popen:
    """``accelerate launch`` of the worker on two CPU processes; returns the launcher.

    accelerate's ``--cpu`` starts several processes only through MPI (``mpirun``); its
    torchrun launcher (``--multi_gpu``) with ``ACCELERATE_USE_CPU`` starts them on a machine
    without MPI, and the processes then form a gloo group (``DistributedType.MULTI_CPU``).
    """
    out.mkdir(parents=True)
    params_path = out / "params.json"
    params_path.write_text(json.dumps(params))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", str(PROCESSES), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()),
               str(WORKER), str(base_dir), str(samples_path), str(params_path), str(out)]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src"), "OMP_NUM_THREADS": "1",
           "ACCELERATE_USE_CPU": "true"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def ranks(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(PROCESSES)]


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[str, str]:
    stdout, stderr = process.communicate(timeout=timeout)
    return stdout, stderr


@pytest.fixture
def ddp_params(training_params) -> dict:
    """Global batch 8 (4 per process), accumulation 2: 24 samples give 3 micro-batches and
    2 optimiser steps an epoch, 4 steps in 2 epochs."""
    training_params.update(epochs=2, batch_size=4, gradient_accumulation_steps=2,
                           warmup_ratio=0.3)
    return training_params


@pytest.fixture
def samples_path(sft_samples, tmp_path) -> Path:
    path = tmp_path / "samples.jsonl"
    sft_samples.to_json(path, orient="records", lines=True, force_ascii=False)
    return path


def test_two_processes_train_as_one_stop_together_and_resume_exactly(
        tiny_base_dir, sft_samples, samples_path, ddp_params, tmp_path):
    """One test, so that the uninterrupted two-process run (a launch costs ~10 s) is both
    the reference for one process and for the resumed run."""
    process = launch(tiny_base_dir, samples_path, ddp_params, tmp_path / "ddp")
    _, stderr = finish(process)
    assert process.returncode == 0, stderr[-3000:]
    main, other = ranks(tmp_path / "ddp")
    history = main["history"]
    assert history["step"] == [1, 2, 3, 4]
    # The ranks' weights stay identical; the history both log is the same.
    assert main["weights"] == other["weights"]
    assert other["history"] == history
    # Logged losses are the mean over processes of each one's mean over its micro-batches.
    micro = {r["rank"]: r["micro_terms"] for r in (main, other)}
    groups = [(0, 2), (2, 3), (3, 5), (5, 6)]  # micro-batches of each step, in call order
    for step, (start, end) in enumerate(groups):
        for k, term in enumerate(LOSS_TERMS):
            per_rank = [sum(m[k] for m in micro[r][start:end]) / (end - start)
                        for r in range(PROCESSES)]
            assert history[term][step] == pytest.approx(sum(per_rank) / PROCESSES, abs=1e-6)
    # One gradient all-reduce per optimiser step, not one per micro-batch.
    rounds = [r for r in main["reductions"] if r == 0]
    assert len(rounds) == 4 and len(main["micro_terms"]) == 6
    # Only the main process wrote a session (checkpoints, progress logs).
    [session] = Path(ddp_params["checkpoint"]["dir"]).iterdir()
    assert main["session_dir"] == other["session_dir"] == str(session)
    assert (session / "checkpoint_final").is_dir()
    assert len(list(session.glob("progress_logs/*"))) >= 1

    # One process with the same global batch: the same learning rate at every step.
    single = train_so8t(tiny_base_dir, sft_samples,
                        {**ddp_params, "batch_size": 8,
                         "checkpoint": {**ddp_params["checkpoint"],
                                        "dir": str(tmp_path / "single")}},
                        checkpoint_dir=tmp_path / "single").history
    assert single["step"].tolist() == history["step"]
    assert history["lr"] == pytest.approx(single["lr"].tolist(), rel=1e-12)
    assert history["tokens"] == single["tokens"].tolist()

    # A SIGTERM to the non-main process stops both after the same micro-batch, with one
    # emergency checkpoint; a resume under two processes repeats the uninterrupted run.
    stopped_dir = tmp_path / "checkpoints_stopped"
    params = {**ddp_params, "pause_after_step_seconds": 1.0,
              "checkpoint": {**ddp_params["checkpoint"], "dir": str(stopped_dir)}}
    process = launch(tiny_base_dir, samples_path, params, tmp_path / "stopped")
    ready = tmp_path / "stopped" / "ready1"
    deadline = time.monotonic() + 240
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), finish(process)[1][-3000:]
    os.kill(int(ready.read_text()), signal.SIGTERM)
    _, stderr = finish(process)
    main, other = ranks(tmp_path / "stopped")
    assert main["ended"] == other["ended"] == "SIGTERM", stderr[-3000:]
    assert main["exit_code"] == other["exit_code"] == 128 + signal.SIGTERM
    [session] = stopped_dir.iterdir()
    [emergency] = session.glob("checkpoint_emergency_*")
    assert main["checkpoint"] == str(emergency)
    state = load(emergency)
    assert 1 <= state.step < 4
    # Both processes stopped after the same micro-batch.
    assert len(main["micro_terms"]) == len(other["micro_terms"])

    resume = {**params, "resume": "latest", "pause_after_step_seconds": 0}
    process = launch(tiny_base_dir, samples_path, resume, tmp_path / "resumed")
    _, stderr = finish(process)
    assert process.returncode == 0, stderr[-3000:]
    main, other = ranks(tmp_path / "resumed")
    assert main["weights"] == other["weights"]
    resumed = main["history"]
    assert resumed["step"] == list(range(state.step + 1, 5))
    for term in (*LOSS_TERMS, "lr"):
        assert resumed[term] == pytest.approx(history[term][state.step:], abs=1e-6), term
    assert main["session_dir"] == str(session)
