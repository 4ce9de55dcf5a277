"""Progress logging and step profiling for the SO8T training loop.

Framework-free (psutil, NVML through ``pynvml``, tqdm, numpy, torch; never kedro). Three
pieces:

* :class:`SystemMonitor` reads CPU %, memory %, the process RSS and, for one GPU, its
  utilisation, memory used/total and temperature. GPU figures come from NVML when the
  library loads, else from ``torch.cuda.mem_get_info`` (memory only) when CUDA is available,
  else they are ``None``.
* :class:`ProgressLogger` is fed once per optimiser step (:meth:`ProgressLogger.update`) and
  writes a JSON progress log every ``interval_seconds`` (180 s by default), keeps
  ``progress_summary.json`` current, warns past system thresholds and drives a tqdm bar.
* :class:`PerformanceProfiler` times steps and reports step-time percentiles, peak memory
  and throughput (``performance_report.json``).

Layout under ``log_dir`` (the training session directory)::

    progress_logs/progress_20261122T040514Z.json   one file per interval (UTC start-of-write)
    progress_summary.json                          rewritten at each log and at close()

A progress log has exactly the keys of :data:`LOG_FIELDS`::

    {
      "timestamp": "2026-11-22T04:08:14.000000+00:00",   # ISO 8601, UTC
      "elapsed": 180.0,                  # seconds since the logger started
      "epoch": 0, "step": 412, "total_steps": 3000,
      "losses": {"total": 2.31, "lm": 2.1, "safety": 0.6, "pet": 0.01, "orthogonality": 0.0},
      "lr": 0.0002,
      "samples_per_second": 9.1,         # over this interval (since the previous log)
      "tokens_per_second": 4650.2,       #   "
      "overall_samples_per_second": 8.7, # since the logger started
      "overall_tokens_per_second": 4471.9,
      "cpu_percent": 37.5, "memory_percent": 61.0, "process_rss_mib": 5120.3,
      "gpu_utilization_percent": 98.0, "gpu_memory_used_mib": 30211.0,
      "gpu_memory_total_mib": 81559.0, "gpu_temperature_c": 71.0,   # null when absent
      "warnings": []                     # threshold / non-finite-loss messages
    }

``losses`` holds the mean of each loss term over the optimiser steps since the previous log
(non-finite values are written as ``null`` and produce a warning). Logs are written from
:meth:`ProgressLogger.update`: the first update at or after each multiple of
``interval_seconds`` since the start writes one log (a step longer than the interval
delays, never skips, the next one; boundaries stay aligned to the start).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import psutil
import pynvml
import torch

from so8t_kedro.training.checkpoint import write_json_atomic

if TYPE_CHECKING:
    from typing_extensions import Self

logger = logging.getLogger(__name__)

MIB = 1024 * 1024

READING_FIELDS: tuple[str, ...] = (
    "cpu_percent",
    "memory_percent",
    "process_rss_mib",
    "gpu_utilization_percent",
    "gpu_memory_used_mib",
    "gpu_memory_total_mib",
    "gpu_temperature_c",
)
"""System reading fields; each may carry a warning threshold."""

LOG_FIELDS: tuple[str, ...] = (
    "timestamp",
    "elapsed",
    "epoch",
    "step",
    "total_steps",
    "losses",
    "lr",
    "samples_per_second",
    "tokens_per_second",
    "overall_samples_per_second",
    "overall_tokens_per_second",
    *READING_FIELDS,
    "warnings",
)
"""The keys of every progress log, in file order."""


DEFAULT_THRESHOLDS: dict[str, float | None] = {
    "gpu_temperature_c": 75.0,
    "memory_percent": 95.0,
    "cpu_percent": 90.0,
}

PROGRESS_DIR = "progress_logs"
SUMMARY_FILE = "progress_summary.json"
PERFORMANCE_REPORT_FILE = "performance_report.json"


# --------------------------------------------------------------------------- system readings


@dataclass(frozen=True)
class SystemReading:
    """One sample of the machine's state; ``None`` where a figure is not available."""

    cpu_percent: float | None = None
    memory_percent: float | None = None
    process_rss_mib: float | None = None
    gpu_utilization_percent: float | None = None
    gpu_memory_used_mib: float | None = None
    gpu_memory_total_mib: float | None = None
    gpu_temperature_c: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


class Monitor(Protocol):
    """Anything with ``read() -> SystemReading`` (tests pass fakes)."""

    def read(self) -> SystemReading: ...


def _torch_cuda() -> Any | None:
    """``torch.cuda`` when CUDA is available, else None (``is_available`` never raises)."""
    return torch.cuda if torch.cuda.is_available() else None


class SystemMonitor:
    """System metrics from psutil and, for one GPU, NVML (``pynvml``).

    Args:
        gpu_index: NVML index of the GPU to watch. ``None``: the device torch currently
            uses (matched by UUID, so ``CUDA_VISIBLE_DEVICES`` is respected), else NVML 0.
        use_nvml: ``False`` skips NVML (GPU memory then comes from torch when CUDA is up).

    ``gpu_backend`` tells where GPU figures come from: ``"nvml"``, ``"torch"`` or ``None``.
    Monitoring never stops training: an NVML initialisation failure is logged at debug
    level, and a read that fails (``NVMLError``, a CUDA ``RuntimeError``, ``psutil.Error`` /
    ``OSError``) yields ``None`` for its fields, the first such failure logged at debug.
    CPU % is psutil's non-blocking ``cpu_percent(interval=None)`` (system-wide, since the
    previous call), primed here.
    """

    def __init__(self, gpu_index: int | None = None, *, use_nvml: bool = True) -> None:
        self._process = psutil.Process()
        psutil.cpu_percent(interval=None)  # prime: the first non-blocking call returns 0.0
        self._handle: Any | None = None  # NVML device handle while NVML is initialised
        self._cuda: Any | None = None
        self._cuda_device: int | None = None
        self._warned_read_failure = False
        if use_nvml:
            self._init_nvml(gpu_index)
        self.gpu_backend: str | None
        if self._handle is not None:
            self.gpu_backend = "nvml"
        elif (cuda := _torch_cuda()) is not None:
            self.gpu_backend = "torch"
            self._cuda, self._cuda_device = cuda, cuda.current_device()
        else:
            self.gpu_backend = None

    def _init_nvml(self, gpu_index: int | None) -> None:
        try:
            pynvml.nvmlInit()  # NVMLError_LibraryNotFound / DriverNotLoaded without a GPU
        except pynvml.NVMLError as exc:
            logger.debug("NVML unavailable (%s); GPU figures come from torch or are None", exc)
            return
        try:
            self._handle = self._nvml_handle(gpu_index)
        except pynvml.NVMLError as exc:
            logger.debug("NVML has no usable GPU (%s); GPU figures come from torch or are None",
                         exc)
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlShutdown()

    @staticmethod
    def _nvml_handle(gpu_index: int | None) -> Any:
        if gpu_index is not None:
            return pynvml.nvmlDeviceGetHandleByIndex(gpu_index)
        cuda = _torch_cuda()
        if cuda is not None:
            device = cuda.current_device()
            with contextlib.suppress(pynvml.NVMLError):  # e.g. a MIG UUID: fall back to index
                uuid = str(cuda.get_device_properties(device).uuid)
                uuid = uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
                return pynvml.nvmlDeviceGetHandleByUUID(uuid)
            return pynvml.nvmlDeviceGetHandleByIndex(device)
        return pynvml.nvmlDeviceGetHandleByIndex(0)

    def read(self) -> SystemReading:
        """Sample CPU %, memory %, process RSS and the GPU figures (never raises)."""
        cpu = memory = rss = None
        try:
            cpu = float(psutil.cpu_percent(interval=None))
            memory = float(psutil.virtual_memory().percent)
            rss = self._process.memory_info().rss / MIB
        except (psutil.Error, OSError) as exc:  # pragma: no cover - exotic platforms
            self._debug_once("psutil read failed: %s", exc)
        return SystemReading(cpu, memory, rss, *self._read_gpu())

    def _read_gpu(self) -> tuple[float | None, float | None, float | None, float | None]:
        util = used = total = temp = None
        if self.gpu_backend == "nvml":
            try:
                util = float(pynvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
            except pynvml.NVMLError as exc:
                self._debug_once("NVML utilisation read failed: %s", exc)
            try:
                info = pynvml.nvmlDeviceGetMemoryInfo(self._handle)
                used, total = info.used / MIB, info.total / MIB
            except pynvml.NVMLError as exc:
                self._debug_once("NVML memory read failed: %s", exc)
            try:
                temp = float(
                    pynvml.nvmlDeviceGetTemperature(self._handle, pynvml.NVML_TEMPERATURE_GPU)
                )
            except pynvml.NVMLError as exc:  # e.g. NotSupported on some boards
                self._debug_once("NVML temperature read failed: %s", exc)
        elif self.gpu_backend == "torch":
            try:
                free, total_bytes = self._cuda.mem_get_info(self._cuda_device)
                used, total = (total_bytes - free) / MIB, total_bytes / MIB
            except RuntimeError as exc:  # CUDA errors
                self._debug_once("torch.cuda memory read failed: %s", exc)
        return util, used, total, temp

    def _debug_once(self, msg: str, *args: Any) -> None:
        if not self._warned_read_failure:
            self._warned_read_failure = True
            logger.debug(msg, *args)

    def close(self) -> None:
        """Release NVML (idempotent)."""
        if self._handle is not None:
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlShutdown()
            self._handle = None
            self.gpu_backend = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- helpers


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _rate(amount: float, seconds: float) -> float | None:
    return amount / seconds if seconds > 0 else None


def _peak(current: float | None, value: float | None) -> float | None:
    if value is None:
        return current
    return value if current is None else max(current, value)


# --------------------------------------------------------------------------- progress logger


class ProgressLogger:
    """Interval JSON progress logs, a summary, threshold warnings and a tqdm bar.

    Args:
        log_dir: session folder; logs go to ``log_dir/progress_logs/``, the summary to
            ``log_dir/progress_summary.json``.
        interval_seconds: seconds between progress logs (180).
        thresholds: warning thresholds by reading field (any of :data:`READING_FIELDS`),
            merged over :data:`DEFAULT_THRESHOLDS`; a value of ``None`` disables that one.
            A reading at or above its threshold warns.
        total_steps: optimiser steps of the whole run (progress-bar total; may be None).
        clock: monotonic seconds source (inject a fake one in tests).
        monitor: system monitor; default a :class:`SystemMonitor` owned (and closed) here.
        show_progress_bar: ``True`` shows tqdm on a TTY (``disable=None``), ``False`` never.
            Without a bar (either way) ``update`` does no bar work.
        initial_step: the step the run resumes from (progress-bar start).

    Call :meth:`update` after every optimiser step with that step's counts; use the
    logger as a context manager or call :meth:`close` to write the final log + summary.
    Only the main process of a distributed run should own one.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        *,
        interval_seconds: float = 180.0,
        thresholds: Mapping[str, float | None] | None = None,
        total_steps: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        monitor: Monitor | None = None,
        show_progress_bar: bool = True,
        initial_step: int = 0,
    ) -> None:
        if interval_seconds <= 0:
            raise ValueError(f"interval_seconds must be > 0, got {interval_seconds}")
        merged = dict(DEFAULT_THRESHOLDS)
        for key, value in (thresholds or {}).items():
            if key not in READING_FIELDS:
                raise ValueError(f"unknown threshold {key!r}; expected one of {READING_FIELDS}")
            merged[key] = None if value is None else float(value)
        self.thresholds: dict[str, float | None] = merged
        self.log_dir = Path(log_dir)
        self.progress_dir = self.log_dir / PROGRESS_DIR
        self.summary_path = self.log_dir / SUMMARY_FILE
        self.interval_seconds = float(interval_seconds)
        self.total_steps = total_steps
        self._clock = clock
        self._owns_monitor = monitor is None
        self.monitor: Monitor = SystemMonitor() if monitor is None else monitor

        self._start = clock()
        self._start_wall = datetime.now(timezone.utc)
        self._next_due = self._start + self.interval_seconds
        self._closed = False
        self._closing = False

        # run totals
        self._updates = 0
        self._samples = 0
        self._tokens = 0
        self._loss_sums: dict[str, float] = {}
        self._loss_counts: dict[str, int] = {}
        self._last_losses: dict[str, float | None] = {}
        self._step: int | None = None
        self._epoch: int | float | None = None
        self._lr: float | None = None
        # since the previous log
        self._iv_start = self._start
        self._iv_updates = 0
        self._iv_samples = 0
        self._iv_tokens = 0
        self._iv_loss_sums: dict[str, float] = {}
        self._iv_loss_counts: dict[str, int] = {}
        self._iv_warnings: list[str] = []
        # across logs
        self.log_files: list[Path] = []
        self._first_logged_step: int | None = None
        self._last_logged_step: int | None = None
        self._peaks: dict[str, float | None] = {k: None for k in READING_FIELDS}
        self._all_warnings: list[dict[str, Any]] = []

        self._bar = None
        if show_progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=total_steps,
                initial=initial_step,
                disable=None,  # off when stderr is not a TTY
                dynamic_ncols=True,
                unit="step",
                desc="train",
                file=sys.stderr,
            )
            self._bar = None if bar.disable else bar

    # -- public API ---------------------------------------------------------------------

    def update(
        self,
        step: int,
        epoch: float,
        losses: Mapping[str, float],
        lr: float,
        samples: int,
        tokens: int,
    ) -> Path | None:
        """Record one optimiser step; write a progress log when an interval has passed.

        Args:
            step: global optimiser step just finished.
            epoch: current epoch (int or fractional).
            losses: loss terms of this step (floats or 0-d tensors), e.g. ``total``, ``lm``,
                ``safety``, ``pet``, ``orthogonality``.
            lr: learning rate used by this step.
            samples: samples consumed by this step (all accumulation micro-batches).
            tokens: non-padding tokens consumed by this step.

        Returns:
            The progress log written by this call, or None.
        """
        if self._closed:
            raise RuntimeError("ProgressLogger is closed")
        if samples < 0 or tokens < 0:
            raise ValueError("samples and tokens must be >= 0")
        now = self._clock()
        self._step, self._epoch, self._lr = int(step), epoch, float(lr)
        self._updates += 1
        self._iv_updates += 1
        self._samples += int(samples)
        self._tokens += int(tokens)
        self._iv_samples += int(samples)
        self._iv_tokens += int(tokens)
        self._last_losses = {}
        for name, value in losses.items():
            value = float(value)
            if math.isfinite(value):
                self._last_losses[name] = value
                for sums, counts in ((self._loss_sums, self._loss_counts),
                                     (self._iv_loss_sums, self._iv_loss_counts)):
                    sums[name] = sums.get(name, 0.0) + value
                    counts[name] = counts.get(name, 0) + 1
            else:
                self._last_losses[name] = None
                self._iv_loss_counts.setdefault(name, 0)
                self._loss_counts.setdefault(name, 0)
                msg = f"loss {name} is {value} at step {step}"
                if msg not in self._iv_warnings:
                    self._iv_warnings.append(msg)

        if self._bar is not None:
            self._update_bar(now)

        if now >= self._next_due:
            path = self._write_log(now)
            # next boundary strictly after now, aligned to the start
            periods = math.floor((now - self._start) / self.interval_seconds) + 1
            self._next_due = self._start + periods * self.interval_seconds
            return path
        return None

    def log_now(self) -> Path | None:
        """Write a progress log now (e.g. at an epoch end); None if no step since the last."""
        if self._iv_updates == 0:
            return None
        return self._write_log(self._clock())

    def close(self) -> None:
        """Write the final log (if steps happened since the last one) and the summary."""
        if self._closed:
            return
        self._closing = True
        try:
            if self.log_now() is None:  # a log rewrites the summary itself
                self._write_summary(self._clock())
        finally:
            self._closed = True
            if self._bar is not None:
                self._bar.close()
            if self._owns_monitor and hasattr(self.monitor, "close"):
                self.monitor.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------

    def _update_bar(self, now: float) -> None:
        bar = self._bar
        postfix: dict[str, str] = {}
        loss = self._last_losses.get("loss")  # the weighted total (training.loop.LOSS_TERMS)
        postfix["loss"] = "nan" if loss is None else f"{loss:.4f}"
        tps = _rate(self._tokens, now - self._start)
        postfix["tok/s"] = "-" if tps is None else f"{tps:.0f}"
        bar.set_postfix(postfix, refresh=False)
        delta = self._step - bar.n
        if delta > 0:
            bar.update(delta)
        else:
            bar.refresh()

    def _check_thresholds(self, reading: Mapping[str, float | None]) -> list[str]:
        messages = []
        for key, limit in self.thresholds.items():
            value = reading.get(key)
            if limit is not None and value is not None and value >= limit:
                messages.append(f"{key} {value:g} >= threshold {limit:g}")
        return messages

    def _timestamp(self, now: float) -> datetime:
        return self._start_wall + timedelta(seconds=now - self._start)

    def _log_path(self, stamp: datetime) -> Path:
        base = f"progress_{stamp.strftime('%Y%m%dT%H%M%SZ')}"
        path = self.progress_dir / f"{base}.json"
        n = 2
        while path.exists():
            path = self.progress_dir / f"{base}_{n}.json"
            n += 1
        return path

    def _write_log(self, now: float) -> Path:
        reading = self.monitor.read().as_dict()
        warnings = self._check_thresholds(reading) + self._iv_warnings
        for msg in warnings:
            logger.warning("training progress (step %s): %s", self._step, msg)
        stamp = self._timestamp(now)
        iv = now - self._iv_start
        losses = {
            name: (self._iv_loss_sums[name] / count if count else None)
            for name, count in self._iv_loss_counts.items()
        }
        record: dict[str, Any] = {
            "timestamp": stamp.isoformat(timespec="microseconds"),
            "elapsed": now - self._start,
            "epoch": self._epoch,
            "step": self._step,
            "total_steps": self.total_steps,
            "losses": losses,
            "lr": self._lr,
            "samples_per_second": _rate(self._iv_samples, iv),
            "tokens_per_second": _rate(self._iv_tokens, iv),
            "overall_samples_per_second": _rate(self._samples, now - self._start),
            "overall_tokens_per_second": _rate(self._tokens, now - self._start),
            **{key: _finite_or_none(reading.get(key)) for key in READING_FIELDS},
            "warnings": warnings,
        }
        path = self._log_path(stamp)
        write_json_atomic(record, path, allow_nan=False)
        self.log_files.append(path)

        if self._first_logged_step is None:
            self._first_logged_step = self._step
        self._last_logged_step = self._step
        for key in READING_FIELDS:
            self._peaks[key] = _peak(self._peaks[key], record[key])
        self._all_warnings.extend(
            {"timestamp": record["timestamp"], "step": self._step, "message": m} for m in warnings
        )
        logger.info(
            "progress step %s/%s epoch %s loss %s | %.1f samples/s %.0f tokens/s -> %s",
            self._step, self.total_steps, self._epoch,
            {k: round(v, 4) for k, v in losses.items() if v is not None},
            record["samples_per_second"] or 0.0, record["tokens_per_second"] or 0.0, path.name,
        )

        # open the next interval
        self._iv_start = now
        self._iv_updates = self._iv_samples = self._iv_tokens = 0
        self._iv_loss_sums, self._iv_loss_counts, self._iv_warnings = {}, {}, []
        self._write_summary(now)
        return path

    def _write_summary(self, now: float) -> None:
        elapsed = now - self._start
        summary = {
            "updated": self._timestamp(now).isoformat(timespec="microseconds"),
            "elapsed": elapsed,
            "closed": self._closing,
            "num_logs": len(self.log_files),
            "log_files": [p.name for p in self.log_files],
            "first_step": self._first_logged_step,
            "last_step": self._last_logged_step,
            "total_steps": self.total_steps,
            "num_updates": self._updates,
            "total_samples": self._samples,
            "total_tokens": self._tokens,
            "mean_losses": {
                name: (self._loss_sums[name] / count if count else None)
                for name, count in self._loss_counts.items()
            },
            "last_losses": dict(self._last_losses),
            "samples_per_second": _rate(self._samples, elapsed),
            "tokens_per_second": _rate(self._tokens, elapsed),
            "peak_cpu_percent": self._peaks["cpu_percent"],
            "peak_memory_percent": self._peaks["memory_percent"],
            "peak_process_rss_mib": self._peaks["process_rss_mib"],
            "peak_gpu_utilization_percent": self._peaks["gpu_utilization_percent"],
            "peak_gpu_memory_used_mib": self._peaks["gpu_memory_used_mib"],
            "peak_gpu_temperature_c": self._peaks["gpu_temperature_c"],
            "thresholds": dict(self.thresholds),
            "warnings": list(self._all_warnings),
        }
        write_json_atomic(summary, self.summary_path, allow_nan=False)


# --------------------------------------------------------------------------- profiler


class PerformanceProfiler:
    """Wall time of each training step, peak memory and throughput.

    Use either ``step_started()`` / ``step_finished(tokens, samples)`` or
    ``with profiler.step(tokens=..., samples=...):``. The first ``warmup_steps`` steps are
    timed but left out of the statistics (compilation, allocator warm-up).

    Args:
        clock: seconds source (``time.perf_counter``; inject a fake one in tests).
        warmup_steps: steps excluded from :meth:`report`.
        rss_reader: bytes of process RSS (default psutil); sampled at every step end.

    No CUDA synchronisation at step boundaries: the loop reads its losses as Python floats
    inside the step, which already waits for the queued kernels.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.perf_counter,
        warmup_steps: int = 0,
        rss_reader: Callable[[], int] | None = None,
    ) -> None:
        self._clock = clock
        self.warmup_steps = int(warmup_steps)
        self._cuda = _torch_cuda()
        if rss_reader is None:
            process = psutil.Process()
            rss_reader = lambda: process.memory_info().rss
        self._rss_reader = rss_reader
        self._started: float | None = None
        self.step_times: list[float] = []
        self.step_tokens: list[int] = []
        self.step_samples: list[int] = []
        self._peak_rss: int | None = None
        if self._cuda is not None:
            with contextlib.suppress(RuntimeError):  # a CUDA error: peaks count from start
                self._cuda.reset_peak_memory_stats()

    def step_started(self) -> None:
        self._started = self._clock()

    def step_finished(self, tokens: int = 0, samples: int = 0) -> float:
        """Close the step opened by :meth:`step_started`; returns its wall time (s)."""
        if self._started is None:
            raise RuntimeError("step_finished() without step_started()")
        duration = self._clock() - self._started
        self._started = None
        self.step_times.append(duration)
        self.step_tokens.append(int(tokens))
        self.step_samples.append(int(samples))
        with contextlib.suppress(psutil.Error, OSError):
            rss = int(self._rss_reader())
            self._peak_rss = rss if self._peak_rss is None else max(self._peak_rss, rss)
        return duration

    @contextlib.contextmanager
    def step(self, tokens: int = 0, samples: int = 0) -> Iterator[None]:
        """Time the enclosed block as one step (not recorded if it raises)."""
        self.step_started()
        try:
            yield
        except BaseException:
            self._started = None
            raise
        self.step_finished(tokens, samples)

    def report(self) -> dict[str, Any]:
        """Step-time statistics (s), throughput over timed steps and peak memory (MiB)."""
        times = np.asarray(self.step_times[self.warmup_steps:], dtype=np.float64)
        tokens = int(sum(self.step_tokens[self.warmup_steps:]))
        samples = int(sum(self.step_samples[self.warmup_steps:]))
        busy = float(times.sum()) if times.size else 0.0
        if times.size:
            p50, p90, p99 = (float(v) for v in np.percentile(times, [50, 90, 99]))
            step_time = {
                "mean": float(times.mean()), "p50": p50, "p90": p90, "p99": p99,
                "min": float(times.min()), "max": float(times.max()), "total": busy,
            }
        else:
            step_time = dict.fromkeys(("mean", "p50", "p90", "p99", "min", "max", "total"))
        peak_alloc = peak_reserved = None
        if self._cuda is not None:
            with contextlib.suppress(RuntimeError):
                peak_alloc = self._cuda.max_memory_allocated() / MIB
                peak_reserved = self._cuda.max_memory_reserved() / MIB
        return {
            "steps": int(times.size),
            "warmup_steps_skipped": min(self.warmup_steps, len(self.step_times)),
            "step_time_seconds": step_time,
            "total_tokens": tokens,
            "total_samples": samples,
            "tokens_per_second": _rate(tokens, busy),
            "samples_per_second": _rate(samples, busy),
            "peak_process_rss_mib": None if self._peak_rss is None else self._peak_rss / MIB,
            "peak_cuda_memory_allocated_mib": peak_alloc,
            "peak_cuda_memory_reserved_mib": peak_reserved,
        }

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`report` atomically; a folder gets ``performance_report.json``."""
        path = Path(path)
        if path.suffix != ".json":
            path = path / PERFORMANCE_REPORT_FILE
        write_json_atomic(self.report(), path, allow_nan=False)
        return path
