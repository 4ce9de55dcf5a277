"""llama.cpp in child processes: a native crash fails one call, never the caller.

llama.cpp is native code compiled for the build machine's CPU. An instruction that the CPU
advertises but the OS or hypervisor does not enable (AMX tiles first of all: llama.cpp
repacks Q8_0 / Q4_K weights into its AMX buffer and dies on the first evaluation with
SIGILL or SIGSEGV) kills the whole Python process, and with it a Kedro run, a server or a
test session. Every call into llama.cpp from this project therefore runs in a child process
(``multiprocessing``'s *spawn*: no forked torch or thread state):

* :class:`LlamaProcess`: a GGUF loaded by ``llama_cpp.Llama`` in a child that answers a
  fixed set of calls (tokenise, evaluate, generate, ...) over a pipe; the GGUF checks and
  the ``--gguf`` serving backend use it;
* :func:`run_isolated`: one function run once in a child (the quantiser).

When the child dies, the caller gets a :class:`NativeCrashError` that names the operation,
the file and the signal; a caller that wants to go on starts a new child.

**Extra buffer types** (llama.cpp's ``use_extra_bufts``: the AMX and CPU "repack" weight
layouts) are what executes AMX. ``extra_buffer_types`` chooses:

* ``"off"`` (the project's default): never used, on every CPU;
* ``"auto"``: used where a probe proved them: the first load of a file type on a machine
  evaluates it with extra buffers in a child of its own; the verdict is cached per machine
  and llama.cpp build (:func:`probe_cache_path`), a crash there only records "unsafe";
* ``"on"``: used without a probe (a crash still fails only the call).

Fault injection for tests: ``SO8T_KEDRO_NATIVE_CRASH="<call>:<SIGNAL>[:<path part>]"`` makes
the child send itself that signal just before ``<call>`` (``load``, ``quantize`` or a call
name such as ``eval_logits``), for files whose path contains ``<path part>`` when given.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import platform
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

CRASH_INJECTION_ENV = "SO8T_KEDRO_NATIVE_CRASH"
EXTRA_BUFFER_MODES = ("off", "auto", "on")
_SPAWN = multiprocessing.get_context("spawn")


class NativeCrashError(RuntimeError):
    """llama.cpp took its child process down (a signal, or an exit without an answer)."""

    def __init__(self, operation: str, path: str | Path, exitcode: int | None):
        self.operation, self.path, self.exitcode = operation, str(path), exitcode
        if exitcode is not None and exitcode < 0:
            how = f"{signal.Signals(-exitcode).name} (signal {-exitcode})"
        else:
            how = f"exit status {exitcode}"
        super().__init__(
            f"llama.cpp crashed with {how} during {operation} of {self.path!r}; the crash was "
            "contained in a child process. If it is SIGILL/SIGSEGV on a quantised file, the CPU "
            "may advertise an instruction set (e.g. AMX) that the OS does not enable: keep "
            "llama.cpp's extra buffer types 'off' (export.gguf.extra_buffer_types)")


# ------------------------------------------------------------------------- the child side


def _inject_crash(call: str, path: str | Path) -> None:
    """Send this (child) process the signal that ``SO8T_KEDRO_NATIVE_CRASH`` asks for."""
    spec = os.environ.get(CRASH_INJECTION_ENV)
    if not spec:
        return
    target, signal_name, *path_part = spec.split(":", 2)
    if target == call and (not path_part or path_part[0] in str(path)):
        os.kill(os.getpid(), signal.Signals[signal_name])


def _new_llama(gguf_path: str, extra_buffers: bool, llama_kwargs: dict[str, Any]):
    import llama_cpp
    import llama_cpp.llama_cpp as low_level

    if not extra_buffers:
        # ``Llama`` does not expose ``use_extra_bufts``; it builds its model parameters from
        # ``llama_model_default_params()``, so this child's defaults are changed instead.
        default_params = low_level.llama_model_default_params

        def params_without_extra_buffers():
            params = default_params()
            params.use_extra_bufts = False
            return params

        low_level.llama_model_default_params = params_without_extra_buffers
    return llama_cpp.Llama(model_path=gguf_path, verbose=False, **llama_kwargs)


def _vocab_pieces(llm, n: int) -> list[str]:
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    return [llama_cpp.llama_vocab_get_text(vocab, i).decode("utf-8") for i in range(n)]


def _eval_logits(llm, ids: Sequence[int]) -> np.ndarray:
    """Next-token logits at every position of ``ids`` (a fresh sequence)."""
    llm.reset()
    llm.eval(list(ids))
    return np.asarray(llm.scores[: len(ids)], dtype=np.float32)


def _continuation_logits(llm, prefix: Sequence[int],
                         continuations: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """For each continuation, the logits that predict its tokens after ``prefix``; the
    prefix is evaluated once and each continuation on top of its cached state."""
    llm.reset()
    llm.eval(list(prefix))
    rows = []
    for continuation in continuations:
        llm.n_tokens = len(prefix)  # drop the previous continuation, keep the prefix's cache
        llm.eval(list(continuation))
        # Row p holds the logits that predict token p + 1.
        rows.append(np.array(llm.scores[len(prefix) - 1: len(prefix) + len(continuation) - 1],
                             dtype=np.float32))
    return rows


def _generate(llm, prompt_ids: Sequence[int], budget: int, stop_ids: frozenset[int]) -> list[int]:
    """Greedy (``temp=0``) generation of at most ``budget`` tokens, ending on a stop id."""
    new_ids: list[int] = []
    for token in llm.generate(list(prompt_ids), temp=0.0, repeat_penalty=1.0, reset=True):
        new_ids.append(token)
        if token in stop_ids or len(new_ids) >= budget:
            break
    return new_ids


_CALLS: dict[str, Callable[..., Any]] = {
    "n_vocab": lambda llm: llm.n_vocab(),
    "n_ctx": lambda llm: llm.n_ctx(),
    "vocab_pieces": _vocab_pieces,
    "tokenize": lambda llm, text: llm.tokenize(text.encode("utf-8"), add_bos=True, special=True),
    "eval_logits": _eval_logits,
    "continuation_logits": _continuation_logits,
    "generate": _generate,
}


def _serve_llama(conn, gguf_path: str, extra_buffers: bool, llama_kwargs: dict[str, Any]) -> None:
    """Child main: load the GGUF, then answer ``(call, args)`` messages until ``None``."""
    try:
        _inject_crash("load", gguf_path)
        llm = _new_llama(gguf_path, extra_buffers, llama_kwargs)
    except Exception as error:  # noqa: BLE001 (any failure is the parent's to raise)
        conn.send(("error", f"{type(error).__name__}: {error}"))
        return
    conn.send(("ok", None))
    while (message := conn.recv()) is not None:
        call, args = message
        _inject_crash(call, gguf_path)
        try:
            conn.send(("ok", _CALLS[call](llm, *args)))
        except Exception as error:  # noqa: BLE001 (reported to the parent, which raises it)
            conn.send(("error", f"{type(error).__name__}: {error}"))
    llm.close()


def _run_once(conn, operation: str, path: str, function: Callable[..., Any], args: tuple) -> None:
    _inject_crash(operation, path)
    try:
        conn.send(("ok", function(*args)))
    except Exception as error:  # noqa: BLE001 (reported to the parent, which raises it)
        conn.send(("error", f"{type(error).__name__}: {error}"))


# ------------------------------------------------------------------------ the parent side


def _receive(conn, process, operation: str, path: str | Path) -> Any:
    """The child's answer; :class:`NativeCrashError` if it died first, ``RuntimeError`` with
    the child's message if the call raised there."""
    try:
        status, value = conn.recv()
    except (EOFError, ConnectionResetError):
        process.join()
        raise NativeCrashError(operation, path, process.exitcode) from None
    if status == "error":
        raise RuntimeError(f"llama.cpp {operation} of {str(path)!r} failed: {value}")
    return value


def run_isolated(operation: str, path: str | Path, function: Callable[..., Any],
                 *args: Any) -> Any:
    """``function(*args)`` (a module-level, picklable function) run once in a child
    process; its result, or :class:`NativeCrashError` naming ``operation`` and ``path``."""
    parent, child = _SPAWN.Pipe()
    process = _SPAWN.Process(target=_run_once, args=(child, operation, str(path), function, args),
                             daemon=True)
    process.start()
    child.close()
    try:
        return _receive(parent, process, operation, path)
    finally:
        parent.close()
        process.join()


class LlamaProcess:
    """A GGUF loaded by ``llama_cpp.Llama`` in a child process.

    ``call(name, *args)`` runs one of the child's calls (``n_vocab``, ``n_ctx``,
    ``vocab_pieces(n)``, ``tokenize(text)``, ``eval_logits(ids)``,
    ``continuation_logits(prefix, continuations)``, ``generate(prompt_ids, budget,
    stop_ids)``) and returns its result. ``llama_kwargs`` go to ``Llama`` (``n_ctx``,
    ``logits_all``, threads, ...). After a :class:`NativeCrashError` the process is gone
    (``alive`` is False); make a new one to go on.
    """

    def __init__(self, gguf_path: str | Path, *, extra_buffer_types: str,
                 operation: str = "llama.cpp", **llama_kwargs: Any):
        self.path = str(gguf_path)
        self.operation = operation
        extra_buffers = extra_buffers_allowed(extra_buffer_types, self.path)
        self._conn, child = _SPAWN.Pipe()
        self._process = _SPAWN.Process(
            target=_serve_llama, args=(child, self.path, extra_buffers, llama_kwargs), daemon=True)
        self._process.start()
        child.close()
        try:
            _receive(self._conn, self._process, f"{operation} (load)", self.path)
        except BaseException:
            self.close()
            raise

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    def call(self, name: str, *args: Any) -> Any:
        if name not in _CALLS:
            raise ValueError(f"LlamaProcess has no call {name!r}; it has {sorted(_CALLS)}")
        if not self.alive:
            raise NativeCrashError(f"{self.operation} ({name})", self.path, self._process.exitcode)
        self._conn.send((name, args))
        return _receive(self._conn, self._process, f"{self.operation} ({name})", self.path)

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._conn.send(None)
            except OSError:
                pass
            self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# ---------------------------------------------------------------- extra buffer types


def probe_cache_path() -> Path:
    """Where ``"auto"`` keeps its verdicts: ``$SO8T_KEDRO_CACHE_DIR`` or
    ``$XDG_CACHE_HOME/so8t_kedro`` (default ``~/.cache/so8t_kedro``)."""
    root = os.environ.get("SO8T_KEDRO_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "so8t_kedro"
    return Path(root) / "llama_cpp_extra_buffers.json"


def _machine_key(gguf_path: str) -> str:
    """What a verdict holds for: this CPU's flags, the kernel, the llama.cpp build and the
    file's weight type (AMX repacks some quantised types only)."""
    import gguf
    import llama_cpp

    cpu_flags = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu_flags = next((line for line in cpuinfo.read_text().splitlines()
                          if line.startswith(("flags", "Features"))), "")
    field = gguf.GGUFReader(gguf_path).get_field(gguf.Keys.General.FILE_TYPE)
    file_type = None if field is None else gguf.LlamaFileType(field.contents()).name
    identity = [platform.machine(), platform.release(), cpu_flags, llama_cpp.__version__,
                llama_cpp.llama_print_system_info().decode()]
    return f"{file_type}:{hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]}"


def probe_extra_buffers(gguf_path: str | Path) -> bool:
    """Whether llama.cpp evaluates ``gguf_path`` with extra buffer types on this machine,
    found out once in a child (loaded with extra buffers, a few tokens evaluated) and cached.
    """
    gguf_path = str(gguf_path)
    cache = probe_cache_path()
    key = _machine_key(gguf_path)
    verdicts = json.loads(cache.read_text()) if cache.is_file() else {}
    if key not in verdicts:
        try:
            with LlamaProcess(gguf_path, extra_buffer_types="on", operation="extra-buffer probe",
                              n_ctx=32) as probe:
                probe.call("eval_logits", [1, 2, 3, 4])
            verdicts[key] = True
        except NativeCrashError:
            verdicts[key] = False
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(f".{cache.name}.{os.getpid()}")
        partial.write_text(json.dumps(verdicts, indent=1))
        os.replace(partial, cache)
    return verdicts[key]


def extra_buffers_allowed(mode: str, gguf_path: str | Path) -> bool:
    """Whether a load of ``gguf_path`` may use extra buffer types under ``mode``."""
    if mode not in EXTRA_BUFFER_MODES:
        raise ValueError(f"llama_cpp.extra_buffer_types must be one of {EXTRA_BUFFER_MODES}, "
                         f"got {mode!r}")
    return mode == "on" or (mode == "auto" and probe_extra_buffers(gguf_path))


__all__ = ["CRASH_INJECTION_ENV", "EXTRA_BUFFER_MODES", "LlamaProcess", "NativeCrashError",
           "extra_buffers_allowed", "probe_cache_path", "probe_extra_buffers", "run_isolated"]
