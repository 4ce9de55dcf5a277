"""The per-step tracker: every step kept with its own step number, written by its own
thread, and nothing lost when the loop never finishes it."""

from __future__ import annotations

import time

import pytest
from mlflow import MlflowClient

from so8t_kedro.tracking.steps import MlflowStepTracker, flush_step_trackers

DEADLINE_S = 60  # a bound on waiting for the writer thread, not a speed requirement


@pytest.fixture
def store(tmp_path) -> tuple[str, MlflowClient, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("steps", str(tmp_path / "art")))
    return uri, client, run.info.run_id


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def wait_for(condition) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, "the writer thread wrote nothing"
        time.sleep(0.05)


def test_steps_are_held_until_the_interval_and_a_flush_writes_an_unfinished_tracker(store):
    uri, client, run_id = store
    tracker = MlflowStepTracker(run_id, uri, interval_s=3600)
    tracker.log({"loss": 3.0, "lr": 1e-3}, step=1)
    tracker.log({"loss": 2.5, "lr": 1e-3}, step=2)
    assert history(client, run_id, "loss") == []  # within the interval: held
    # A failed training's loop never calls finish(): the hook's flush still writes all.
    flush_step_trackers()
    assert history(client, run_id, "loss") == [(1, 3.0), (2, 2.5)]
    assert history(client, run_id, "lr") == [(1, 1e-3), (2, 1e-3)]


def test_steps_are_written_while_training_runs(store):
    uri, client, run_id = store
    tracker = MlflowStepTracker(run_id, uri, interval_s=0.01)
    for step in range(1, 4):
        tracker.log({"loss": 1.0 / step}, step=step)
    wait_for(lambda: len(history(client, run_id, "loss")) == 3)  # no finish() yet
    tracker.log({"loss": 0.25}, step=4)
    tracker.finish()
    tracker.flush()
    assert [step for step, _ in history(client, run_id, "loss")] == [1, 2, 3, 4]


def test_a_failed_write_keeps_its_steps_for_the_next(store, caplog):
    uri, client, run_id = store
    tracker = MlflowStepTracker(run_id, uri, interval_s=0.01)
    log_batch, calls = tracker.tracker.log_batch, []

    def fail_once(*args, **kwargs):
        calls.append(kwargs["metrics"])
        if len(calls) == 1:
            raise ConnectionError("store unreachable")
        return log_batch(*args, **kwargs)

    tracker.tracker.log_batch = fail_once  # the tracker's MLflow client
    tracker.log({"loss": 2.0}, step=1)
    wait_for(lambda: history(client, run_id, "loss") == [(1, 2.0)])
    tracker.flush()
    assert "retried at the next write" in caplog.text
    assert [m.step for m in calls[0]] == [1]
