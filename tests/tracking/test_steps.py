"""The per-step tracker: every step kept with its own step number, written in batches."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient

from so8t_kedro.tracking.steps import MlflowStepTracker


def test_steps_are_held_until_the_interval_and_all_written_by_finish(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)  # flush_async_logging() flushes this URI's store
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("steps", str(tmp_path / "art")))
    now = [0.0]
    tracker = MlflowStepTracker(run.info.run_id, uri, interval_s=5.0, clock=lambda: now[0])

    def history() -> list[tuple[int, float]]:
        mlflow.flush_async_logging()
        return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")]

    tracker.log({"loss": 3.0, "lr": 1e-3}, step=1)
    tracker.log({"loss": 2.5, "lr": 1e-3}, step=2)
    assert history() == []  # within the interval: held
    now[0] = 5.0
    tracker.log({"loss": 2.0, "lr": 1e-3}, step=3)
    assert history() == [(1, 3.0), (2, 2.5), (3, 2.0)]
    tracker.log({"loss": 1.5, "lr": 1e-3}, step=4)
    tracker.finish()
    assert history()[-1] == (4, 1.5)
    assert len(client.get_metric_history(run.info.run_id, "lr")) == 4
