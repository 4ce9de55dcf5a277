"""llama.cpp in child processes: a crash (injected with SO8T_KEDRO_NATIVE_CRASH, the way an
AMX SIGILL would strike) fails one call with the operation, file and signal named, and the
test process, like a Kedro run or a server, goes on."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from so8t_kedro.export.gguf import quantize_gguf
from so8t_kedro.export.llama_process import (
    CRASH_INJECTION_ENV,
    LlamaProcess,
    NativeCrashError,
    extra_buffers_allowed,
    probe_cache_path,
)
from tests.helpers.tolerances import GGUF_FILE_LIMITS

pytestmark = pytest.mark.slow  # starts llama.cpp child processes
IDS = [1, 5, 9, 17, 33]


@pytest.fixture
def probe_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SO8T_KEDRO_CACHE_DIR", str(tmp_path / "cache"))
    return probe_cache_path()


@pytest.mark.parametrize("signal_name", ["SIGILL", "SIGSEGV", "SIGABRT"])
def test_a_crash_in_a_call_names_signal_operation_and_file(gguf_files, monkeypatch, signal_name):
    path = gguf_files["Q8_0"]
    with LlamaProcess(path, extra_buffer_types="off", operation="GGUF verification") as llm:
        expected = llm.call("eval_logits", IDS)
        monkeypatch.setenv(CRASH_INJECTION_ENV, f"eval_logits:{signal_name}")
        # The child read the variable at spawn: only a new child sees it.
    with LlamaProcess(path, extra_buffer_types="off", operation="GGUF verification") as llm:
        with pytest.raises(NativeCrashError) as crash:
            llm.call("eval_logits", IDS)
        assert not llm.alive
        with pytest.raises(NativeCrashError):  # a dead process stays an error, not a hang
            llm.call("n_vocab")
    number = signal.Signals[signal_name].value
    assert crash.value.exitcode == -number
    assert f"{signal_name} (signal {number})" in str(crash.value)
    assert "GGUF verification (eval_logits)" in str(crash.value)
    assert str(path) in str(crash.value)
    monkeypatch.delenv(CRASH_INJECTION_ENV)
    with LlamaProcess(path, extra_buffer_types="off") as llm:  # the caller goes on
        np.testing.assert_array_equal(llm.call("eval_logits", IDS), expected)


def test_a_crash_while_loading_and_an_ordinary_load_error_differ(gguf_files, tmp_path,
                                                                monkeypatch):
    monkeypatch.setenv(CRASH_INJECTION_ENV, "load:SIGSEGV")
    with pytest.raises(NativeCrashError, match=r"SIGSEGV .* during serving \(load\)"):
        LlamaProcess(gguf_files["F16"], extra_buffer_types="off", operation="serving")
    monkeypatch.delenv(CRASH_INJECTION_ENV)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(gguf_files["F16"].read_bytes()[:4096])
    with pytest.raises(RuntimeError, match="serving \\(load\\) of .*truncated.gguf' failed") as error:
        LlamaProcess(truncated, extra_buffer_types="off", operation="serving")
    assert not isinstance(error.value, NativeCrashError)


def test_a_crash_in_the_quantiser_leaves_no_file(gguf_files, tmp_path, monkeypatch):
    monkeypatch.setenv(CRASH_INJECTION_ENV, "quantize:SIGILL")
    out = tmp_path / "q.gguf"
    with pytest.raises(NativeCrashError, match=r"SIGILL .* during quantize of .*F16"):
        quantize_gguf(gguf_files["F16"], out, "Q4_K_M")
    assert list(tmp_path.iterdir()) == []  # neither the file nor its partial


def test_auto_probes_once_per_file_type_and_caches_the_verdict(gguf_files, probe_cache,
                                                               monkeypatch):
    assert extra_buffers_allowed("off", gguf_files["Q8_0"]) is False
    assert not probe_cache.exists()  # "off" never probes
    # The probe's child crashes as on a CPU whose AMX the OS does not enable.
    monkeypatch.setenv(CRASH_INJECTION_ENV, "eval_logits:SIGILL:Q8_0")
    assert extra_buffers_allowed("auto", gguf_files["Q8_0"]) is False
    [(key, verdict)] = json.loads(probe_cache.read_text()).items()
    assert key.startswith("MOSTLY_Q8_0:") and verdict is False
    monkeypatch.delenv(CRASH_INJECTION_ENV)
    # Cached: the machine is not probed again (it would now pass).
    assert extra_buffers_allowed("auto", gguf_files["Q8_0"]) is False
    probe_cache.write_text(json.dumps({key: True}))
    assert extra_buffers_allowed("auto", gguf_files["Q8_0"]) is True
    with pytest.raises(ValueError, match="extra_buffer_types must be one of"):
        extra_buffers_allowed("yes", gguf_files["Q8_0"])


def test_extra_buffers_on_cannot_take_the_caller_down(gguf_files, probe_cache):
    """On a CPU with AMX that the OS does not enable, 'on' crashes the child (SIGILL or
    SIGSEGV); elsewhere it must give the safe path's logits to quantised-kernel accuracy.
    Either way this process survives, and 'auto' agrees with what happened."""
    path = gguf_files["Q8_0"]
    with LlamaProcess(path, extra_buffer_types="off") as llm:
        safe = llm.call("eval_logits", IDS)
    try:
        with LlamaProcess(path, extra_buffer_types="on") as llm:
            fast = llm.call("eval_logits", IDS)
    except NativeCrashError as crash:
        assert crash.exitcode in (-signal.SIGILL, -signal.SIGSEGV, -signal.SIGBUS)
        assert extra_buffers_allowed("auto", path) is False
    else:
        # Repacked kernels quantise activations to 8 bits where the plain path may not; the
        # logits stay within the Q8_0 quantisation limit the GGUF tests use against fp32.
        assert np.abs(fast - safe).max() < GGUF_FILE_LIMITS["Q8_0"]
        assert extra_buffers_allowed("auto", path) is True
