"""Tests of the training checkpoint manager: retention, atomicity, signals, exact resume."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from so8t_kedro.training import checkpoint as ck
from so8t_kedro.training.state import (
    DataPosition,
    TrainingState,
    capture_rng_state,
    restore_rng_state,
)
from tests.training import _checkpoint_worker as worker

WORKER = Path(worker.__file__)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def small_state(step: int, epoch: int = 0, value: float = 0.0) -> TrainingState:
    return TrainingState(
        trainable={"lora_A": torch.full((2, 3), value + step), "theta": torch.arange(4.0)},
        optimizer={"state": {0: {"step": torch.tensor(float(step))}},
                   "param_groups": [{"lr": 0.1, "params": [0]}]},
        scheduler={"last_epoch": step, "base_lrs": [0.1]},
        rng=capture_rng_state(), step=step, epoch=epoch,
        position=DataPosition(index=step % 3, seed=7), params={"lr": 0.1})


def run_worker(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Synchronise on a file the worker writes (polls; fails fast if the worker died)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"worker exited {proc.returncode} before writing {path}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"worker did not write {path} within {timeout}s")
        time.sleep(0.02)


# --------------------------------------------------------------------------- retention


def test_retention_keeps_newest_rolling_and_all_epoch_final(tmp_path):
    clock = FakeClock()
    manager = ck.CheckpointManager.create(tmp_path, session_id="s1", clock=clock,
                                          max_checkpoints=5, params={"lr": 0.1})
    assert manager.session_dir == tmp_path / "checkpoints" / "training" / "s1"
    saved = []
    for step in range(1, 9):
        clock.now += 180
        saved.append(manager.save("rolling", small_state(step), step=step))
        if step in (3, 6):
            manager.save("epoch", small_state(step, epoch=step // 3), epoch=step // 3)
    manager.save("final", small_state(8, epoch=2))

    names = sorted(p.name for p in manager.session_dir.iterdir())
    rolling = [n for n in names if n.startswith("checkpoint_rolling_")]
    assert rolling == sorted(p.name for p in saved[-5:])
    assert [p.name[:27] for p in saved[-5:]] == [f"checkpoint_rolling_{s:08d}" for s in range(4, 9)]
    assert {"checkpoint_epoch_1", "checkpoint_epoch_2", "checkpoint_final"} <= set(names)
    assert not [n for n in names if n.startswith(".tmp-")]

    info = json.loads((manager.session_dir / "session_info.json").read_text())
    assert info["session_id"] == "s1" and info["status"] == "finished"
    assert info["params"] == {"lr": 0.1} and info["created_at"]
    listed = {e["path"] for e in info["checkpoints"]}
    on_disk = {n for n in names if n.startswith("checkpoint_")}
    assert listed == on_disk and len(listed) == 8
    kinds = sorted(e["kind"] for e in info["checkpoints"])
    assert kinds == ["epoch", "epoch", "final"] + ["rolling"] * 5
    assert all({"kind", "step", "path", "time"} <= e.keys() for e in info["checkpoints"])
    assert ck.load(manager.session_dir / "checkpoint_epoch_1").step == 3


def test_should_save_at_interval_boundary(tmp_path):
    clock = FakeClock()
    manager = ck.CheckpointManager(tmp_path / "s", interval_seconds=180, clock=clock)
    start = clock.now
    assert not manager.should_save()
    clock.now = start + 179.999
    assert not manager.should_save()
    clock.now = start + 180
    assert manager.should_save()
    manager.save("rolling", small_state(1))
    assert not manager.should_save()             # interval restarts at each save
    clock.now += 179
    assert not manager.should_save()
    clock.now += 1
    assert manager.should_save()


def test_save_rejects_bad_kind_and_step_mismatch(tmp_path):
    manager = ck.CheckpointManager(tmp_path / "s")
    with pytest.raises(ValueError, match="kind"):
        manager.save("hourly", small_state(1))
    with pytest.raises(ValueError, match="state.step"):
        manager.save("rolling", small_state(1), step=2)


# --------------------------------------------------------------------------- round trip


def test_load_round_trip_and_rng_restore(tmp_path):
    manager = ck.CheckpointManager(tmp_path / "s")
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    np.random.randn()  # numpy now holds a cached gaussian (has_gauss=1)
    random.gauss(0, 1)  # python now holds gauss_next
    state = small_state(5, epoch=1)
    expected = (random.gauss(0, 1), np.random.randn(3).tolist(), torch.rand(3))
    path = manager.save("emergency", state)
    assert path.name.startswith("checkpoint_emergency_")

    loaded = ck.load(path)
    assert torch.equal(loaded.trainable["lora_A"], state.trainable["lora_A"])
    assert loaded.optimizer["param_groups"] == state.optimizer["param_groups"]
    assert loaded.scheduler == state.scheduler
    assert (loaded.step, loaded.epoch, loaded.position) == (5, 1, DataPosition(2, 7))
    assert loaded.params == {"lr": 0.1} and loaded.scaler is None

    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    restore_rng_state(loaded.rng)
    assert (random.gauss(0, 1), np.random.randn(3).tolist()) == expected[:2]
    assert torch.equal(torch.rand(3), expected[2])
    for name in ("trainable.safetensors", "rng.safetensors", "rng.json", "optimizer.pt",
                 "scheduler.pt", "checkpoint.json"):
        assert (path / name).is_file()


# --------------------------------------------------------------------------- safety


class _Evil:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_malicious_pickle_is_refused(tmp_path):
    manager = ck.CheckpointManager(tmp_path / "s")
    path = manager.save("rolling", small_state(1))
    pwned = tmp_path / "pwned"
    torch.save({"state": _Evil(str(pwned)), "param_groups": []}, path / "optimizer.pt")

    with pytest.raises(ck.CheckpointError, match=r"weights_only=True.*optimizer\.pt|"
                                                 r"optimizer\.pt.*weights_only=True"):
        ck.load(path)
    assert not pwned.exists()  # the payload never ran

    (path / "trainable.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ck.CheckpointError, match="safetensors"):
        ck.load(path)


# --------------------------------------------------------------------------- resume lookup


def test_resolve_resume_latest_across_sessions_skips_corrupt(tmp_path, caplog):
    root = tmp_path
    with pytest.raises(ck.CheckpointNotFoundError, match="searched .*checkpoints/training"):
        ck.resolve_resume("latest", root)

    old = ck.CheckpointManager.create(root, session_id="20250101_000000_000000")
    old.save("rolling", small_state(10))
    old_epoch = old.save("epoch", small_state(12, epoch=1))
    new = ck.CheckpointManager.create(root, session_id="20250102_000000_000000")
    new_first = new.save("rolling", small_state(13))
    newest = new.save("rolling", small_state(14))
    (new.session_dir / ".tmp-checkpoint_rolling_00000099_x-1").mkdir()  # stale tmp: ignored

    assert ck.resolve_resume("latest", root) == newest
    assert ck.latest(new.session_dir) == newest
    assert ck.latest(old.session_dir) == old_epoch
    assert ck.resolve_resume(None, root) is None
    assert ck.resolve_resume(str(new_first), root) == new_first
    assert ck.resolve_resume(new_first.relative_to(root), root) == new_first
    assert ck.resolve_resume(old.session_dir, root) == old_epoch

    (newest / "checkpoint.json").write_text("{ truncated")
    with caplog.at_level(logging.WARNING, logger=ck.__name__):
        assert ck.resolve_resume("latest", root) == new_first
    assert any(str(newest) in r.getMessage() for r in caplog.records)
    with pytest.raises(ck.CheckpointError, match="corrupt"):
        ck.resolve_resume(str(newest), root)
    with pytest.raises(ck.CheckpointNotFoundError, match="not found"):
        ck.resolve_resume(str(root / "nope"), root)

    for path in (new_first, old_epoch, *old.checkpoints()):
        (path / "checkpoint.json").unlink(missing_ok=True)
    with pytest.raises(ck.CheckpointNotFoundError, match="skipped as broken"):
        ck.resolve_resume("latest", root)


def test_resume_takes_the_newest_matching_checkpoint_of_an_unfinished_session(tmp_path):
    fingerprint = {"batch_size": 4, "seed": 1, "train_data": "aa"}

    def state(step: int, **changes) -> TrainingState:
        saved = small_state(step)
        saved.fingerprint = {**fingerprint, **changes}
        return saved

    manager = ck.CheckpointManager.create(tmp_path, session_id="20250101_000000_000000")
    matching = manager.save("rolling", state(1))
    other = manager.save("rolling", state(2, batch_size=8))
    assert ck.load(other).fingerprint["batch_size"] == 8
    # 'latest' passes over the newer checkpoint of other settings.
    assert ck.resolve_resume("latest", tmp_path, fingerprint) == matching
    assert ck.resolve_resume("latest", tmp_path) == other  # no fingerprint: no check
    with pytest.raises(ck.ResumeMismatchError) as mismatch:
        ck.resolve_resume(str(other), tmp_path, fingerprint)
    assert "batch_size: 8 in the checkpoint, 4 now" in str(mismatch.value)
    assert "seed" not in str(mismatch.value)  # only the fields that differ
    assert f"training.resume={other},training.resume_accept_changes=true" in str(mismatch.value)
    assert ck.resolve_resume(str(other), tmp_path, fingerprint, accept_changes=True) == other
    with pytest.raises(ck.ResumeMismatchError,
                       match=r"1 older unfinished.*seed: 1 in the checkpoint, 2 now"):
        ck.resolve_resume("latest", tmp_path, {**fingerprint, "seed": 2})

    final = manager.save("final", state(3))
    assert ck.session_finished(manager.session_dir)
    with pytest.raises(ck.CheckpointNotFoundError, match="finished.*training.resume="):
        ck.resolve_resume("latest", tmp_path, fingerprint)
    assert ck.resolve_resume(str(final), tmp_path, fingerprint) == final  # asked for by name


# --------------------------------------------------------------------------- atomicity


def test_kill_mid_save_leaves_previous_checkpoint_loadable(tmp_path):
    session = tmp_path / "checkpoints" / "training" / "sess"
    marker = tmp_path / "writing"
    proc = run_worker("slow-save", str(session), str(marker))
    wait_for_file(marker, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    half_written = Path(marker.read_text())
    assert half_written.name == "optimizer.pt" and half_written.parent.name.startswith(".tmp-")
    assert half_written.parent.parent == session
    finals = sorted(p.name for p in session.iterdir() if p.name.startswith("checkpoint_"))
    assert len(finals) == 1 and finals[0].startswith("checkpoint_rolling_00000001_")
    previous = session / finals[0]

    assert ck.latest(tmp_path) == previous
    assert ck.resolve_resume("latest", tmp_path) == previous
    state = ck.load(previous)
    assert state.step == 1 and set(state.trainable) == {"weight", "bias"}
    info = json.loads((session / "session_info.json").read_text())
    assert [e["path"] for e in info["checkpoints"]] == [previous.name]

    manager = ck.CheckpointManager(session)  # a new run on the same session cleans up
    assert not half_written.parent.exists()
    assert not [p for p in session.iterdir() if p.name.startswith(".tmp-")]
    assert manager.checkpoints() == [previous]


# --------------------------------------------------------------------------- signals


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_signal_saves_emergency_checkpoint_and_exits_cleanly(tmp_path, sig, code):
    ready = tmp_path / "ready"
    proc = run_worker("train", str(tmp_path), str(ready))
    wait_for_file(ready, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == code, (out, err)
    assert "Traceback" not in err, err
    session = Path(ready.read_text())
    emergencies = sorted(session.glob("checkpoint_emergency_*"))
    assert len(emergencies) == 1
    state = ck.load(emergencies[0])
    assert state.step >= 3 and state.params["note"] == "toy"
    info = json.loads((session / "session_info.json").read_text())
    assert info["status"] == "interrupted" and info["signal"] == sig.name
    assert [e["kind"] for e in info["checkpoints"]] == ["emergency"]
    lines = [line for line in out.splitlines() if "training.resume=latest" in line]
    assert len(lines) == 1
    assert "kedro run --pipelines=training --params=training.resume=latest" in lines[0]
    assert str(emergencies[0]) in lines[0] and sig.name in lines[0]


def test_graceful_shutdown_sets_flag_and_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with ck.graceful_shutdown((signal.SIGTERM,)) as stop:
        assert not stop.requested
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested and bool(stop) and stop.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before
    exc = ck.TrainingInterrupted("/x/checkpoint_emergency_1", "SIGTERM", signal.SIGTERM)
    assert exc.exit_code == 143 and "training.resume=latest" in str(exc)


def test_second_sigint_falls_through_to_keyboard_interrupt():
    with ck.graceful_shutdown((signal.SIGINT,)) as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)


# --------------------------------------------------------------------------- exact resume


def test_exact_resume_matches_uninterrupted_run(tmp_path):
    worker.seed_all(1)
    full = worker.ToyLoop()
    losses_full = [full.train_step() for _ in range(10)]

    worker.seed_all(1)
    first = worker.ToyLoop()
    losses = [first.train_step() for _ in range(4)]
    manager = ck.CheckpointManager.create(tmp_path)
    path = manager.save("rolling", first.state())
    del first

    worker.seed_all(12345)  # fresh state: different init, scrambled RNGs
    resumed = worker.ToyLoop()
    assert not torch.equal(resumed.model.weight, full.model.weight)
    resumed.restore(ck.load(ck.resolve_resume("latest", tmp_path)))
    assert ck.resolve_resume("latest", tmp_path) == path
    assert (resumed.step, resumed.epoch, resumed.index) == (4, 0, 4)
    losses += [resumed.train_step() for _ in range(6)]  # crosses the epoch boundary at 6

    assert losses == losses_full  # exactly, not just to 1e-6
    assert torch.equal(resumed.model.weight, full.model.weight)
    assert resumed.scheduler.get_last_lr() == full.scheduler.get_last_lr()


def test_failed_save_leaves_nothing_and_resave_replaces(tmp_path):
    manager = ck.CheckpointManager(tmp_path / "s")
    first = manager.save("epoch", small_state(3, epoch=1))
    bad = small_state(4, epoch=1)
    bad.params = {"not_json": object()}
    with pytest.raises(TypeError):
        manager.save("rolling", bad)
    assert sorted(p.name for p in manager.session_dir.iterdir()) == [
        "checkpoint_epoch_1", "session_info.json"]

    again = manager.save("epoch", small_state(5, epoch=1), epoch=1)
    assert again == first and ck.load(again).step == 5
    assert [p.name for p in manager.checkpoints()] == ["checkpoint_epoch_1"]
    assert not [p for p in manager.session_dir.iterdir() if p.name.startswith(".tmp-")]
