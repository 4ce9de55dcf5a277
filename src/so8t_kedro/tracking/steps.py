"""Each optimiser step's losses and throughput, live in the MLflow run.

:class:`MlflowStepTracker` is an accelerate tracker: the training loop hands it to its
``Accelerator(log_with=...)`` and calls ``accelerator.log(values, step=step)`` once per
optimiser step; accelerate calls it on the main process only. It logs into an existing
run (the Kedro run's) and never starts or ends one, unlike accelerate's own
``MLflowTracker``, which would open a second run. Logging is asynchronous (MLflow's
queue and worker thread), so a slow store does not hold up the step; the tracking hook
flushes the queue when the run ends (``mlflow.flush_async_logging()`` flushes the store of
the global tracking URI, which kedro-mlflow sets to this run's, and MLflow keeps one store
per URI).

Framework-free (no Kedro): the loop imports nothing from here but the tracker it is given.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from accelerate.tracking import GeneralTracker

MAX_BATCH_METRICS = 1000  # MLflow's limit per log_batch call


class MlflowStepTracker(GeneralTracker):
    """Logs ``accelerator.log`` values as metrics of the MLflow run ``run_id``.

    Steps are written together every ``interval_s`` seconds (and by :meth:`finish`, which
    the loop calls at its end): a write costs the store one transaction (~25 ms in SQLite
    on a loaded 2-core machine), whatever the number of metrics, which per step of a fast
    model would be a few per cent of training. Each metric keeps its own step.
    """

    name = "so8t-mlflow-steps"
    requires_logging_directory = False

    def __init__(self, run_id: str, tracking_uri: str, interval_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        from mlflow import MlflowClient  # imported only when tracking is on

        self.run_id = run_id
        self.interval_s = interval_s
        self._client = MlflowClient(tracking_uri=tracking_uri)
        self._clock = clock
        self._pending: list[Any] = []  # mlflow.entities.Metric
        self._written_at = clock()

    @property
    def tracker(self) -> Any:
        """The MLflow client (accelerate's handle on a tracker's backend)."""
        return self._client

    def store_init_configuration(self, values: dict) -> None:
        """Unused: kedro-mlflow logs the run's parameters."""

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        self._pending += [Metric(key, float(value), timestamp, step or 0)
                          for key, value in values.items()]
        if self._clock() - self._written_at >= self.interval_s:
            self.finish()

    def finish(self) -> None:
        """Queue what is held (MLflow writes it on its own thread)."""
        for start in range(0, len(self._pending), MAX_BATCH_METRICS):
            self._client.log_batch(self.run_id, synchronous=False,
                                   metrics=self._pending[start:start + MAX_BATCH_METRICS])
        self._pending = []
        self._written_at = self._clock()


def step_trackers() -> list[GeneralTracker]:
    """A tracker for the MLflow run active in this thread, or none.

    kedro-mlflow makes the Kedro run's MLflow run the active one in the thread of every
    node; with tracking off no run is active, and there is nothing to log to.
    """
    # Without MLflow imported no run can be active: importing it would cost seconds.
    mlflow = sys.modules.get("mlflow")
    run = mlflow.active_run() if mlflow is not None else None
    if run is None:
        return []
    return [MlflowStepTracker(run.info.run_id, mlflow.get_tracking_uri())]
