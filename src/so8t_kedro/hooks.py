"""Project hooks: what each node of a run cost, how to resume a failed run, a notice at the end.

- :class:`RunSummaryHooks`: wall time and peak memory per node, logged as one table when the
  run ends and saved to the ``run_summary`` catalog entry (08_reporting, versioned).
- :class:`NodeFailureHooks`: one log line when a node fails, naming the node, its inputs and
  the command that resumes the run.
- :class:`CompletionNotificationHooks`: runs the shell command in ``run_hooks.notify_command``
  (off by default) once the run has ended, e.g. to play a sound.
- :class:`ParameterValidationHooks`: checks the run's merged parameters against their typed
  models (:mod:`so8t_kedro.parameters`) before anything else reads them; an unknown, missing
  or mistyped key fails the run at its start, naming the key and its file.
- :class:`LaunchedProcessHooks`: under ``accelerate launch`` every process runs the pipeline;
  only the main one writes the catalog, the others write into a folder of their own.

Registered in ``settings.py``. Except for the parameter check, they watch, never decide:
nothing they do changes whether a run succeeds. Timings come from the process that runs the nodes, i.e. SequentialRunner (the
default) and ThreadRunner; under ParallelRunner the nodes run in worker processes and the
table stays empty.
"""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import psutil
from kedro.framework.hooks import hook_impl
from kedro.io import AbstractDataset, CatalogProtocol, MemoryDataset
from kedro.pipeline import Node, Pipeline

from so8t_kedro.launch import launch_rank

if TYPE_CHECKING:
    from kedro.framework.context import KedroContext

logger = logging.getLogger(__name__)

RUN_SUMMARY_DATASET = "run_summary"
RSS_SAMPLE_INTERVAL_S = 0.02
MIB = 2**20
# Rich would read "[...]" in node names or table text as markup.
PLAIN = {"markup": False}


def _initialised_cuda() -> Any | None:
    """``torch.cuda`` once this process has initialised CUDA, else None.

    Never imports torch nor creates a CUDA context: a process that has not initialised CUDA
    has allocated nothing on the GPU, so there is no peak to reset or read.
    """
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return torch.cuda
    return None


class NodeResourceRecorder:
    """Wall time and peak memory of each node of one run, in the order the nodes end.

    A node's span runs from Kedro calling its function (inputs loaded) to the function
    returning (outputs not saved yet), as Kedro's node hooks frame it.

    Peak RSS: a daemon thread reads this process's resident set size every ``interval_s``
    (20 ms by default), and each node also gets a reading as it starts and as it ends. A
    spike shorter than the interval can fall between two readings: that is the resolution.
    Peak CUDA memory: ``torch.cuda.max_memory_allocated()`` on the current device, reset as
    each node starts. Both are process-wide, so nodes that overlap (ThreadRunner) share them.
    """

    def __init__(self, interval_s: float = RSS_SAMPLE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.started_at = datetime.now(timezone.utc)
        self.rows: list[dict[str, Any]] = []
        self._started = time.perf_counter()
        self._process = psutil.Process()
        self._running: dict[str, tuple[float, int]] = {}  # node -> (start time, peak RSS)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._sampler = threading.Thread(
            target=self._sample_rss, name="node-rss-sampler", daemon=True
        )

    def start(self) -> None:
        self._sampler.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._sampler.is_alive():
            self._sampler.join()

    def elapsed_s(self) -> float:
        return time.perf_counter() - self._started

    def node_started(self, name: str) -> None:
        if cuda := _initialised_cuda():
            cuda.reset_peak_memory_stats()
        with self._lock:
            self._running[name] = (time.perf_counter(), self._rss())

    def node_ended(self, name: str) -> None:
        with self._lock:
            started, peak_rss = self._running.pop(name)
        wall_time_s = time.perf_counter() - started
        peak_rss = max(peak_rss, self._rss())
        cuda = _initialised_cuda()
        self.rows.append({
            "node": name,
            "wall_time_s": round(wall_time_s, 6),
            "peak_rss_mib": round(peak_rss / MIB, 1),
            "peak_cuda_mib": round(cuda.max_memory_allocated() / MIB, 1) if cuda else None,
        })

    def _rss(self) -> int:
        return self._process.memory_info().rss

    def _sample_rss(self) -> None:
        while not self._stopped.wait(self.interval_s):
            rss = self._rss()
            with self._lock:
                for name, (started, peak) in self._running.items():
                    self._running[name] = (started, max(peak, rss))


def format_summary(summary: dict[str, Any]) -> str:
    """The run summary as one text block: a headline, then one aligned row per node."""
    headline = (
        f"Run summary ({summary['status']}): {len(summary['nodes'])} nodes, "
        f"{summary['wall_time_s']:.1f} s in all (data loading and saving included); "
        f"peak RSS sampled every {summary['rss_sample_interval_s'] * 1000:.0f} ms"
    )
    if summary["failed_node"]:
        headline += f"; failed node: {summary['failed_node']}"
    if not summary["nodes"]:
        return headline
    table = (
        pd.DataFrame(summary["nodes"])
        .dropna(axis="columns", how="all")  # no CUDA column on a CPU run
        .round({"wall_time_s": 3})
        .set_index("node")  # node names as the (left-aligned) row labels
        .to_string(index_names=False)
    )
    return f"{headline}\n{table}"


class RunSummaryHooks:
    """Per-node wall time and peak memory, logged as a table and saved as ``run_summary``.

    The summary is saved when the catalog has a ``run_summary`` entry (the project's does;
    a catalog built for a test may not) and for a failed run too.
    """

    def __init__(self) -> None:
        self._recorder = NodeResourceRecorder()
        self._failed_node: str | None = None

    @hook_impl
    def before_pipeline_run(self) -> None:
        # One hooks instance serves every run of the process (a notebook runs many).
        self._recorder = NodeResourceRecorder()
        self._recorder.start()
        self._failed_node = None

    @hook_impl
    def before_node_run(self, node: Node) -> None:
        self._recorder.node_started(node.name)

    @hook_impl
    def after_node_run(self, node: Node) -> None:
        self._recorder.node_ended(node.name)

    @hook_impl
    def on_node_error(self, node: Node) -> None:
        self._failed_node = node.name
        self._recorder.node_ended(node.name)

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], catalog: CatalogProtocol) -> None:
        self._report("success", run_params, catalog)

    @hook_impl
    def on_pipeline_error(self, run_params: dict[str, Any], catalog: CatalogProtocol) -> None:
        self._report("failure", run_params, catalog)

    def _report(
        self, status: str, run_params: dict[str, Any], catalog: CatalogProtocol
    ) -> None:
        self._recorder.stop()
        summary = {
            "run_id": run_params["run_id"],
            "status": status,
            "pipelines": run_params["pipeline_names"] or ["__default__"],
            "env": run_params["env"],
            "started_at": self._recorder.started_at.isoformat(timespec="seconds"),
            "wall_time_s": round(self._recorder.elapsed_s(), 3),
            "failed_node": self._failed_node,
            "rss_sample_interval_s": self._recorder.interval_s,
            "nodes": self._recorder.rows,
        }
        logger.info("%s", format_summary(summary), extra=PLAIN)
        if RUN_SUMMARY_DATASET not in catalog:
            return
        # A report must not fail a run, nor hide why it failed, whatever the save raises.
        try:
            catalog.save(RUN_SUMMARY_DATASET, summary)
        except Exception as error:  # noqa: BLE001
            logger.warning("Could not save the run summary: %s", error)


def _lives_in_memory(dataset_name: str, catalog: CatalogProtocol) -> bool:
    """True for a dataset that does not outlive the run (``MemoryDataset`` and the like)."""
    if dataset_name.startswith("params:") or dataset_name == "parameters":
        return False  # parameters are read from conf/ again on every run
    if dataset_name not in catalog:
        return True
    # `_EPHEMERAL` is how a Kedro dataset says it is not persisted (see AbstractDataset).
    return getattr(catalog.get(dataset_name), "_EPHEMERAL", False)


def rerun_options(run_params: dict[str, Any]) -> str:
    """The ``kedro run`` options that select the same pipelines and environment again."""
    options = []
    if run_params["pipeline_names"]:
        options.append("--pipelines=" + ",".join(run_params["pipeline_names"]))
    if run_params["env"]:
        options.append(f"--env={run_params['env']}")
    return "".join(f" {shlex.quote(option)}" for option in options)


def node_failure_line(
    error: Exception, node: Node, catalog: CatalogProtocol, run_options: str = ""
) -> str:
    """One line: the failed node, the error, its inputs, and how to resume the run."""
    message = str(error).strip().splitlines()
    reason = f"{type(error).__name__}: {message[0]}" if message else type(error).__name__
    in_memory = [name for name in node.inputs if _lives_in_memory(name, catalog)]
    if in_memory:
        # --from-nodes=<this node> would find nothing to load: resume further up.
        resume = (f"{', '.join(in_memory)} only lived in memory, so resume with the "
                  "--from-nodes Kedro suggests next")
    else:
        resume = f"resume with: kedro run{run_options} --from-nodes={shlex.quote(node.name)}"
    inputs = ", ".join(node.inputs) or "none"
    return f"Node {node.name} failed ({reason}); inputs: {inputs}; {resume}"


class NodeFailureHooks:
    """Logs :func:`node_failure_line` when a node fails (Kedro logs the traceback itself)."""

    def __init__(self) -> None:
        self._run_options = ""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        self._run_options = rerun_options(run_params)

    @hook_impl
    def on_node_error(self, error: Exception, node: Node, catalog: CatalogProtocol) -> None:
        logger.error("%s", node_failure_line(error, node, catalog, self._run_options),
                     extra=PLAIN)


def run_notify_command(command: str, status: str, run_id: str, timeout_s: float) -> None:
    """Run ``command`` in a shell with ``SO8T_RUN_STATUS`` and ``SO8T_RUN_ID`` set.

    A command that fails, is missing or outlives ``timeout_s`` only logs a warning. Its
    stderr goes to the console as is: a pipe would make Windows wait for a timed-out
    command's children to close it.
    """
    env = {**os.environ, "SO8T_RUN_STATUS": status, "SO8T_RUN_ID": run_id}
    try:
        result = subprocess.run(command, shell=True, env=env, timeout=timeout_s, check=False,
                                stdout=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        logger.warning("Completion notification %r did not finish: %s", command, error)
        return
    if result.returncode != 0:
        logger.warning("Completion notification %r exited with %d", command, result.returncode)


class CompletionNotificationHooks:
    """Runs ``run_hooks.notify_command`` once a run has ended, successfully or not.

    Off while the parameter is null (the default). The command runs in a shell with
    ``SO8T_RUN_STATUS`` (``success`` or ``failure``) and ``SO8T_RUN_ID`` in its environment,
    for at most ``run_hooks.notify_timeout_s`` seconds.
    """

    def __init__(self) -> None:
        self._command: str | None = None
        self._timeout_s = 0.0

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        settings = context.params["run_hooks"]
        self._command = settings["notify_command"]
        self._timeout_s = float(settings["notify_timeout_s"])

    # trylast: the notice comes after the other hooks have reported, when the run is over.
    @hook_impl(trylast=True)
    def after_pipeline_run(self, run_params: dict[str, Any]) -> None:
        self._notify("success", run_params)

    @hook_impl(trylast=True)
    def on_pipeline_error(self, run_params: dict[str, Any]) -> None:
        self._notify("failure", run_params)

    def _notify(self, status: str, run_params: dict[str, Any]) -> None:
        if self._command:
            run_notify_command(self._command, status, run_params["run_id"], self._timeout_s)


class ParameterValidationHooks:
    """Validates the run's parameters (conf/base, the environment's files and ``--params``,
    merged) against :data:`so8t_kedro.parameters.PARAMETER_FILES` when the context is
    created, before any other hook or node reads them: a typo in a YAML file or an override
    fails the run at its start with one error listing each unknown, missing or mistyped key
    as ``<file>: <dotted path>: <reason>``, instead of falling back to a value nobody chose.
    """

    # tryfirst: before the other hooks' after_context_created read their parameters.
    @hook_impl(tryfirst=True)
    def after_context_created(self, context: KedroContext) -> None:
        # Here, not at the top: the PII model imports spaCy and Presidio, which every
        # `kedro` command would otherwise pay for when it reads settings.py.
        from so8t_kedro.parameters import validate_parameters

        validate_parameters(context.params)


def rank_private_dataset(name: str, catalog: CatalogProtocol, folder: Path) -> AbstractDataset:
    """``name``'s dataset, writing under ``folder`` instead of its catalog path, unversioned.

    Same type and arguments, so a later node loads what it would load from the catalog (a
    model folder's path, a frame ...); a dataset without a ``filepath`` lives in memory.
    """
    config = dict(catalog.config_resolver.resolve_pattern(name))
    if "filepath" not in config:
        return MemoryDataset()
    config["filepath"] = str(folder / name / Path(config["filepath"]).name)
    config.pop("versioned", None)
    return AbstractDataset.from_config(name, config)


class LaunchedProcessHooks:
    """Under ``accelerate launch`` (DDP/FSDP) each process runs the whole ``kedro run``: the
    nodes before and after training run in every process, and training itself is one
    distributed run (the loop writes checkpoints and progress logs from the main process).

    So that one run leaves one set of outputs, a process other than the main one (rank 0)
    saves every dataset the pipeline produces, and the run summary, into a temporary folder
    of its own, removed when the process exits: versioned datasets are not saved twice
    under two save versions, nothing collides, and its own nodes still read what it made.
    """

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, pipeline: Pipeline, catalog: CatalogProtocol) -> None:
        rank = launch_rank()
        if rank == 0:
            return
        folder = Path(tempfile.mkdtemp(prefix=f"so8t-rank{rank}-"))
        # At exit, not at the pipeline's end: a training stopped by a signal leaves the
        # run with SystemExit, which no pipeline hook sees.
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        written = {*pipeline.all_outputs(), RUN_SUMMARY_DATASET}
        # The catalog warns of every entry replaced; here replacing them is the point.
        catalog_logger = logging.getLogger("kedro.io.data_catalog")
        level = catalog_logger.level
        catalog_logger.setLevel(logging.ERROR)
        try:
            for name in sorted(written):
                if name in catalog and not _lives_in_memory(name, catalog):
                    catalog[name] = rank_private_dataset(name, catalog, folder)
        finally:
            catalog_logger.setLevel(level)
        logger.info("Process %d of an accelerate launch: its catalog outputs go to %s "
                    "(the main process writes the run's)", rank, folder)
