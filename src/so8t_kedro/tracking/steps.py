"""Each optimiser step's losses and throughput, live in the MLflow run.

:class:`MlflowStepTracker` is an accelerate tracker: the training loop hands it to its
``Accelerator(log_with=...)`` and calls ``accelerator.log(values, step=step)`` once per
optimiser step; accelerate calls it on the main process only. It logs into an existing
run (the Kedro run's) and never starts or ends one, unlike accelerate's own
``MLflowTracker``, which would open a second run.

The training thread only appends each step's values to a list; a writer thread of the
tracker's own writes them to the store. The loop's ``finish()`` hands the rest to the
writer without waiting for it (the write overlaps the loop's final validation);
:func:`flush_step_trackers` waits for every tracker's writer, and the tracking hook calls
it when the Kedro run ends, fails or the process exits, so no step is lost.

Framework-free (no Kedro): the loop imports nothing from here but the tracker it is given.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

from accelerate.tracking import GeneralTracker

logger = logging.getLogger(__name__)

MAX_BATCH_METRICS = 1000  # MLflow's limit per log_batch call

# Trackers whose writer has not written its last steps (see flush_step_trackers).
_unflushed: set[MlflowStepTracker] = set()
_unflushed_lock = threading.Lock()


class MlflowStepTracker(GeneralTracker):
    """Logs ``accelerator.log`` values as metrics of the MLflow run ``run_id``.

    The writer writes what has gathered every ``interval_s`` seconds: a write costs the
    store one transaction (~6 ms in SQLite, plus ~0.07 ms per metric, mostly Python that
    holds the GIL) whatever the number of steps, so steps go together rather than one by
    one. Each metric keeps its own step and time. A failed write keeps its steps for the
    next one; only the last write's failure loses them (with a warning: tracking never
    fails a training).
    """

    name = "so8t-mlflow-steps"
    requires_logging_directory = False

    def __init__(self, run_id: str, tracking_uri: str, interval_s: float = 5.0) -> None:
        super().__init__()
        from mlflow import MlflowClient  # imported only when tracking is on

        self.run_id = run_id
        self.interval_s = interval_s
        self._client = MlflowClient(tracking_uri=tracking_uri)
        self._held: list[tuple[int, int, dict[str, float]]] = []  # (step, ms, values)
        self._held_lock = threading.Lock()
        self._finishing = threading.Event()
        self._writer = threading.Thread(target=self._write_until_finished, daemon=True,
                                        name=f"mlflow-steps-{run_id}")
        with _unflushed_lock:
            _unflushed.add(self)
        self._writer.start()

    @property
    def tracker(self) -> Any:
        """The MLflow client (accelerate's handle on a tracker's backend)."""
        return self._client

    def store_init_configuration(self, values: dict) -> None:
        """Unused: kedro-mlflow logs the run's parameters."""

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        held = (step or 0, int(time.time() * 1000),
                {key: float(value) for key, value in values.items()})
        with self._held_lock:
            self._held.append(held)

    def finish(self) -> None:
        """Have the writer write what is held and stop; returns at once (see :meth:`flush`)."""
        self._finishing.set()

    def flush(self) -> None:
        """Finish and wait until every step logged is in the store."""
        self.finish()
        self._writer.join()

    def _write_until_finished(self) -> None:
        while not self._finishing.wait(self.interval_s):
            self._write_held()
        self._write_held(last=True)
        with _unflushed_lock:
            _unflushed.discard(self)

    def _write_held(self, last: bool = False) -> None:
        from mlflow.entities import Metric

        with self._held_lock:
            steps, self._held = self._held, []
        metrics = [Metric(key, value, timestamp, step)
                   for step, timestamp, values in steps for key, value in values.items()]
        try:
            for start in range(0, len(metrics), MAX_BATCH_METRICS):
                self._client.log_batch(self.run_id, metrics=metrics[start:start + MAX_BATCH_METRICS])
        except Exception as error:  # noqa: BLE001 - any store error: training goes on without tracking
            if last:
                logger.warning("MLflow run %s: %d step(s) not logged: %r", self.run_id,
                               len(steps), error)
                return
            logger.warning("MLflow run %s: writing %d step(s) failed, retried at the next "
                           "write: %r", self.run_id, len(steps), error)
            with self._held_lock:
                self._held[:0] = steps


def flush_step_trackers() -> None:
    """Wait until every tracker of this process has written what it was given (a failed
    training's loop never calls ``finish()``: this finishes it)."""
    with _unflushed_lock:
        trackers = list(_unflushed)
    for tracker in trackers:
        tracker.flush()


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
