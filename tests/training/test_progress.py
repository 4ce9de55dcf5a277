"""Progress logger and profiler: fake clock + fake monitor, no model, no sleeps."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from so8t_kedro.training.progress import (
    LOG_FIELDS,
    PerformanceProfiler,
    ProgressLogger,
    SystemMonitor,
    SystemReading,
)

LOSSES = {"loss": 2.5, "lm": 2.0, "safety": 0.4, "pet": 0.06, "orthogonality": 0.04}


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FakeMonitor:
    def __init__(self, reading: SystemReading) -> None:
        self.reading = reading
        self.reads = 0

    def read(self) -> SystemReading:
        self.reads += 1
        return self.reading


NO_GPU = SystemReading(cpu_percent=12.5, memory_percent=40.0, process_rss_mib=512.0)
GPU = SystemReading(
    cpu_percent=12.5,
    memory_percent=40.0,
    process_rss_mib=512.0,
    gpu_utilization_percent=97.0,
    gpu_memory_used_mib=30000.0,
    gpu_memory_total_mib=81559.0,
    gpu_temperature_c=66.0,
)


def make_logger(tmp_path: Path, reading: SystemReading = NO_GPU, **kwargs):
    clock = kwargs.pop("clock", FakeClock())
    kwargs.setdefault("total_steps", 100)
    kwargs.setdefault("show_progress_bar", False)
    pl = ProgressLogger(tmp_path, clock=clock, monitor=FakeMonitor(reading), **kwargs)
    return pl, clock


def log_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "progress_logs").glob("progress_*.json"))


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- fields

GPU_FIELDS = (
    "gpu_utilization_percent",
    "gpu_memory_used_mib",
    "gpu_memory_total_mib",
    "gpu_temperature_c",
)


@pytest.mark.parametrize("reading", [NO_GPU, GPU], ids=["no_gpu", "gpu"])
def test_log_has_exactly_the_documented_fields(tmp_path, reading):
    pl, clock = make_logger(tmp_path, reading)
    clock.advance(180)
    path = pl.update(step=7, epoch=1, losses=LOSSES, lr=2e-4, samples=8, tokens=1000)
    assert path is not None and path.parent.name == "progress_logs"
    rec = read(path)
    assert list(rec) == list(LOG_FIELDS)
    assert set(rec) == {
        "timestamp", "elapsed", "epoch", "step", "total_steps", "losses", "lr",
        "samples_per_second", "tokens_per_second", "overall_samples_per_second",
        "overall_tokens_per_second", "cpu_percent", "memory_percent", "process_rss_mib",
        *GPU_FIELDS, "warnings",
    }
    assert isinstance(rec["timestamp"], str) and rec["timestamp"].endswith("+00:00")
    assert rec["elapsed"] == 180.0
    assert (rec["epoch"], rec["step"], rec["total_steps"]) == (1, 7, 100)
    assert rec["losses"] == LOSSES  # every term separately
    assert rec["lr"] == 2e-4
    for key in ("samples_per_second", "tokens_per_second", "cpu_percent", "memory_percent",
                "process_rss_mib"):
        assert isinstance(rec[key], float), key
    assert rec["warnings"] == []
    if reading is NO_GPU:
        assert all(rec[k] is None for k in GPU_FIELDS)
    else:
        assert [rec[k] for k in GPU_FIELDS] == [97.0, 30000.0, 81559.0, 66.0]
    # the file name carries the UTC timestamp of the log
    assert path.name == "progress_" + rec["timestamp"][:19].replace("-", "").replace(
        ":", "") + "Z.json"
    assert not list(tmp_path.rglob(".tmp-*"))  # atomic write left nothing behind
    pl.close()


def test_losses_are_interval_means_and_non_finite_is_flagged(tmp_path):
    pl, clock = make_logger(tmp_path)
    pl.update(1, 0, {"loss": 1.0, "lm": 3.0}, 1e-4, 1, 10)
    clock.advance(180)
    path = pl.update(2, 0, {"loss": 3.0, "lm": float("nan")}, 1e-4, 1, 10)
    rec = read(path)
    assert rec["losses"] == {"loss": 2.0, "lm": 3.0}
    assert rec["warnings"] == ["loss lm is nan at step 2"]
    pl.close()


# --------------------------------------------------------------------------- interval


def test_logs_are_written_at_interval_boundaries_only(tmp_path):
    pl, clock = make_logger(tmp_path)
    written_at = []
    for step in range(1, 101):  # 100 steps of 10 s: boundaries at 180, 360, ..., 900
        clock.advance(10)
        if pl.update(step, 0, LOSSES, 1e-4, samples=2, tokens=100) is not None:
            written_at.append(step * 10)
    assert written_at == [180, 360, 540, 720, 900]
    assert len(log_files(tmp_path)) == 5
    summary = read(tmp_path / "progress_summary.json")
    assert summary["num_logs"] == 5 and summary["closed"] is False

    pl.close()  # steps 91..100 since the last log: one final log
    files = log_files(tmp_path)
    assert len(files) == 6
    assert [read(f)["step"] for f in files] == [18, 36, 54, 72, 90, 100]
    summary = read(tmp_path / "progress_summary.json")
    assert summary["closed"] is True
    assert summary["num_logs"] == len(files) == len(summary["log_files"])
    assert sorted(summary["log_files"]) == [f.name for f in files]
    assert (summary["first_step"], summary["last_step"]) == (18, 100)
    assert summary["mean_losses"] == pytest.approx(LOSSES)
    assert summary["last_losses"] == LOSSES
    assert summary["total_samples"] == 200 and summary["total_tokens"] == 10_000
    assert summary["tokens_per_second"] == 10.0  # 10 000 tokens / 1000 s
    assert summary["peak_cpu_percent"] == 12.5 and summary["peak_gpu_temperature_c"] is None


def test_long_step_does_not_skip_or_shift_boundaries(tmp_path):
    pl, clock = make_logger(tmp_path)
    clock.advance(170)
    assert pl.update(1, 0, LOSSES, 1e-4, 1, 1) is None
    clock.advance(230)  # t=400: past 180 and 360 -> one log, next boundary 540
    assert pl.update(2, 0, LOSSES, 1e-4, 1, 1) is not None
    clock.advance(139)  # t=539
    assert pl.update(3, 0, LOSSES, 1e-4, 1, 1) is None
    clock.advance(1)  # t=540
    assert pl.update(4, 0, LOSSES, 1e-4, 1, 1) is not None
    pl.close()
    assert len(log_files(tmp_path)) == 2  # nothing new since the last log at close


def test_context_manager_writes_final_log_and_summary(tmp_path):
    clock = FakeClock()
    with ProgressLogger(tmp_path, total_steps=3, clock=clock, monitor=FakeMonitor(NO_GPU),
                        show_progress_bar=False) as pl:
        for step in (1, 2, 3):
            clock.advance(1)
            pl.update(step, 0, LOSSES, 1e-4, 1, 5)
        assert log_files(tmp_path) == []
    files = log_files(tmp_path)
    assert len(files) == 1 and read(files[0])["step"] == 3
    assert read(tmp_path / "progress_summary.json")["num_logs"] == 1
    with pytest.raises(RuntimeError):
        pl.update(4, 0, LOSSES, 1e-4, 1, 5)


# --------------------------------------------------------------------------- throughput


def test_throughput_is_exact_over_a_known_interval(tmp_path):
    pl, clock = make_logger(tmp_path)
    for step in range(1, 7):  # 6 steps, 30 s apart, 4 samples / 1234 tokens each
        clock.advance(30)
        path = pl.update(step, 0, LOSSES, 1e-4, samples=4, tokens=1234)
    rec = read(path)
    assert rec["elapsed"] == 180.0
    assert rec["tokens_per_second"] == 6 * 1234 / 180
    assert rec["samples_per_second"] == 24 / 180
    # second interval: different rate, overall averages both
    for step in range(7, 10):
        clock.advance(60)
        path = pl.update(step, 0, LOSSES, 1e-4, samples=1, tokens=600)
    rec = read(path)
    assert rec["tokens_per_second"] == 1800 / 180 == 10.0
    assert rec["samples_per_second"] == 3 / 180
    assert rec["overall_tokens_per_second"] == (6 * 1234 + 1800) / 360
    assert rec["overall_samples_per_second"] == 27 / 360
    pl.close()


# --------------------------------------------------------------------------- thresholds

HOT = SystemReading(cpu_percent=95.0, memory_percent=96.0, process_rss_mib=1.0,
                    gpu_temperature_c=80.0)
AT = SystemReading(cpu_percent=90.0, memory_percent=95.0, process_rss_mib=1.0,
                   gpu_temperature_c=75.0)
COOL = SystemReading(cpu_percent=89.9, memory_percent=94.9, process_rss_mib=1.0,
                     gpu_temperature_c=74.9)


def _one_log(tmp_path, reading, **kwargs) -> dict:
    pl, clock = make_logger(tmp_path, reading, **kwargs)
    clock.advance(180)
    rec = read(pl.update(1, 0, LOSSES, 1e-4, 1, 1))
    pl.close()
    return rec


@pytest.mark.parametrize("reading", [HOT, AT], ids=["above", "at"])
@pytest.mark.parametrize("key", ["gpu_temperature_c", "memory_percent", "cpu_percent"])
def test_threshold_warns_in_logging_and_json(tmp_path, caplog, reading, key):
    caplog.set_level(logging.WARNING, logger="so8t_kedro.training.progress")
    rec = _one_log(tmp_path, reading)
    matching = [w for w in rec["warnings"] if w.startswith(key)]
    assert len(matching) == 1
    assert any(key in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    summary = read(tmp_path / "progress_summary.json")
    assert [w["message"] for w in summary["warnings"]] == rec["warnings"]
    assert summary["warnings"][0]["step"] == 1


def test_below_thresholds_no_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="so8t_kedro.training.progress")
    rec = _one_log(tmp_path, COOL)
    assert rec["warnings"] == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("key", ["gpu_temperature_c", "memory_percent", "cpu_percent"])
def test_threshold_none_disables_only_that_one(tmp_path, caplog, key):
    caplog.set_level(logging.WARNING, logger="so8t_kedro.training.progress")
    rec = _one_log(tmp_path, HOT, thresholds={key: None})
    warned = {w.split()[0] for w in rec["warnings"]}
    assert warned == {"gpu_temperature_c", "memory_percent", "cpu_percent"} - {key}
    assert not [r for r in caplog.records if key in r.getMessage()]


def test_thresholds_are_configurable_and_validated(tmp_path):
    rec = _one_log(tmp_path, COOL, thresholds={"cpu_percent": 50})
    assert [w.split()[0] for w in rec["warnings"]] == ["cpu_percent"]
    with pytest.raises(ValueError, match="unknown threshold"):
        ProgressLogger(tmp_path, monitor=FakeMonitor(COOL), thresholds={"gpu_temp": 1},
                       show_progress_bar=False)


# --------------------------------------------------------------------------- progress bar


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_tracks_step_and_shows_loss_and_tokens(tmp_path, monkeypatch):
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    pl, clock = make_logger(tmp_path, show_progress_bar=True, total_steps=50)
    clock.advance(10)
    pl.update(5, 0, LOSSES, 1e-4, samples=1, tokens=500)
    assert pl._bar.total == 50 and pl._bar.n == 5
    pl.close()
    out = tty.getvalue()
    assert "5/50" in out and "loss=2.5000" in out and "tok/s=50" in out


def test_progress_bar_off_when_asked_or_not_a_tty(tmp_path, monkeypatch):
    pl, _ = make_logger(tmp_path / "off", show_progress_bar=False)
    assert pl._bar is None
    pl.close()
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a TTY: tqdm(disable=None)
    pl, clock = make_logger(tmp_path / "pipe", show_progress_bar=True)
    clock.advance(1)
    pl.update(1, 0, LOSSES, 1e-4, 1, 1)
    pl.close()
    assert sys.stderr.getvalue() == ""


# --------------------------------------------------------------------------- real monitor


def test_real_system_monitor_on_this_machine():
    with SystemMonitor() as monitor:
        first, second = monitor.read(), monitor.read()
        gpu = monitor.gpu_backend is not None
    for reading in (first, second):
        assert 0.0 <= reading.cpu_percent <= 100.0
        assert 0.0 <= reading.memory_percent <= 100.0
        assert reading.process_rss_mib > 0
        if not gpu:  # the CI machine has no GPU: NVML fails quietly, torch has no CUDA
            assert all(getattr(reading, k) is None for k in GPU_FIELDS)
        else:  # pragma: no cover - only on a GPU machine
            assert reading.gpu_memory_total_mib > 0


def test_monitor_survives_nvml_init_failure(monkeypatch):
    import pynvml

    def boom():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    monkeypatch.setattr(pynvml, "nvmlInit", boom)
    monkeypatch.setattr("so8t_kedro.training.progress._torch_cuda", lambda: None)
    monitor = SystemMonitor()
    assert monitor.gpu_backend is None
    assert monitor.read().gpu_temperature_c is None
    monitor.close()


def test_monitor_reads_nvml_through_pynvml(monkeypatch):
    import pynvml

    class Mem:
        used, total = 2048 * 1024 * 1024, 8192 * 1024 * 1024

    class Util:
        gpu = 55

    calls = {"shutdown": 0}
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown",
                        lambda: calls.__setitem__("shutdown", calls["shutdown"] + 1))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: ("h", i))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUtilizationRates", lambda h: Util)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", lambda h: Mem)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTemperature", lambda h, sensor: 71)
    monkeypatch.setattr("so8t_kedro.training.progress._torch_cuda", lambda: None)
    monitor = SystemMonitor()
    assert monitor.gpu_backend == "nvml"
    r = monitor.read()
    assert (r.gpu_utilization_percent, r.gpu_memory_used_mib, r.gpu_memory_total_mib,
            r.gpu_temperature_c) == (55.0, 2048.0, 8192.0, 71.0)
    monitor.close()
    assert calls["shutdown"] == 1


# --------------------------------------------------------------------------- profiler

STEP_TIMES = [0.5, 0.25, 1.75, 0.3, 0.3, 2.0, 0.45, 0.6, 0.35, 5.0, 0.4, 0.55]


def test_profiler_percentiles_match_numpy(tmp_path, monkeypatch):
    monkeypatch.setattr("so8t_kedro.training.progress._torch_cuda", lambda: None)
    clock = FakeClock(0.0)
    rss = iter([100, 300, 200] * 10)
    prof = PerformanceProfiler(clock=clock, rss_reader=lambda: next(rss) * 1024 * 1024)
    for i, dt in enumerate(STEP_TIMES):
        if i % 2:
            with prof.step(tokens=100, samples=2):
                clock.advance(dt)
        else:
            prof.step_started()
            clock.advance(dt)
            prof.step_finished(tokens=100, samples=2)
        clock.advance(7.0)  # time between steps is not step time
    rep = prof.report()
    st = rep["step_time_seconds"]
    expected = np.percentile(STEP_TIMES, [50, 90, 99])
    assert [st["p50"], st["p90"], st["p99"]] == pytest.approx(expected, rel=1e-12)
    assert st["mean"] == pytest.approx(np.mean(STEP_TIMES), rel=1e-12)
    assert rep["steps"] == len(STEP_TIMES)
    assert rep["tokens_per_second"] == pytest.approx(1200 / sum(STEP_TIMES))
    assert rep["samples_per_second"] == pytest.approx(24 / sum(STEP_TIMES))
    assert rep["peak_process_rss_mib"] == 300.0
    assert rep["peak_cuda_memory_allocated_mib"] is None  # no CUDA (patched out)

    path = prof.write(tmp_path)
    assert path == tmp_path / "performance_report.json"
    assert json.loads(path.read_text())["step_time_seconds"]["p99"] == pytest.approx(expected[2])


def test_profiler_warmup_and_misuse():
    clock = FakeClock(0.0)
    prof = PerformanceProfiler(clock=clock, warmup_steps=2, rss_reader=lambda: 1)
    assert prof.report()["step_time_seconds"]["p50"] is None
    with pytest.raises(RuntimeError):
        prof.step_finished()
    for dt in (10.0, 9.0, 1.0, 3.0):
        with prof.step(tokens=10):
            clock.advance(dt)
    with pytest.raises(ValueError), prof.step(tokens=10):
        clock.advance(50.0)
        raise ValueError("step failed")
    rep = prof.report()
    assert rep["steps"] == 2 and rep["warmup_steps_skipped"] == 2
    assert rep["step_time_seconds"]["p50"] == np.percentile([1.0, 3.0], 50)
    assert rep["tokens_per_second"] == 20 / 4.0
