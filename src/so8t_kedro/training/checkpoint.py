"""Checkpoints of the SO8T training loop: atomic saves, a rolling stock, exact resume, signals.

Framework-free (torch + safetensors + numpy + stdlib; never kedro). The training loop owns
one :class:`CheckpointManager` per training session and calls it at optimiser-step
boundaries (after ``optimizer.step()`` / ``scheduler.step()`` / ``zero_grad()``).

Layout on disk::

    <root>/checkpoints/training/<session_id>/   # session_id: new_session_id()
    ├── session_info.json                       # id, created, status, params, checkpoints
    ├── checkpoint_rolling_<step:08d>_<ts>/     # each interval; newest max_checkpoints kept
    ├── checkpoint_epoch_<N>/                   # each epoch end; never deleted
    ├── checkpoint_final/                       # end of training; never deleted
    ├── checkpoint_emergency_<ts>/              # on SIGINT/SIGTERM/SIGBREAK; never deleted
    └── .tmp-<name>-<pid>/                      # a save in progress (ignored, cleaned on start)

Each checkpoint folder holds::

    trainable.safetensors   LoRA + gate θ tensors (safetensors)
    optimizer.pt            optimizer.state_dict()      } torch.save, read back with
    scheduler.pt            scheduler.state_dict()      } torch.load(weights_only=True)
    scaler.pt               GradScaler.state_dict()     } (optional files)
    rng.json                python ``random`` and numpy global RNG states (JSON)
    rng.safetensors         torch CPU RNG state and one state per CUDA device (uint8 tensors)
    checkpoint.json         written last: kind, step, epoch, data position, params,
                            fingerprint, saved_at, files

Nothing is ever unpickled beyond what ``weights_only=True`` allows.

Atomicity: a save writes every file into ``.tmp-<name>-<pid>/`` next to its final place,
fsyncs the files and the folder, then renames the folder into place (one ``os.replace``).
A process killed at any moment therefore leaves either no new folder under a final name or
a complete one; earlier checkpoints are untouched. Old rolling checkpoints are deleted only
after the new one is in place, by renaming them to ``.tmp-…`` first, so a half-deleted folder
never carries a final name either. ``session_info.json`` is rewritten atomically (temporary
file + ``os.replace``) after each save; it is informational: loading and
:func:`latest` scan the folders themselves. One manager (one process) writes a session.

Typical loop::

    manager = CheckpointManager.create(root, params=params, interval_seconds=180)
    with graceful_shutdown() as stop:
        for epoch in range(start_epoch, epochs):
            for index in range(start_index, len(order)):
                ... forward / backward / optimizer.step() / scheduler.step() ...
                if stop.requested:
                    raise manager.interrupt(make_state(), stop)   # saves, marks, prints hint
                if manager.should_save():
                    manager.save("rolling", make_state())
            manager.save("epoch", make_state(), epoch=epoch + 1)
    manager.save("final", make_state())                           # status -> finished

Exit contract on a signal: :meth:`CheckpointManager.interrupt` saves an ``emergency``
checkpoint, sets the session status to ``interrupted``, prints one line to stdout with the
resume command (``kedro run --pipelines=training --params=training.resume=latest`` and the
checkpoint path), and returns a :class:`TrainingInterrupted` for the loop to raise. Inside a
Kedro run the node then fails with that one-line message; a standalone entry point catches
it and exits with ``exc.exit_code`` = 128 + signal number (130 for SIGINT, 143 for SIGTERM,
149 for SIGBREAK), the shell convention for "stopped by a signal" — never a traceback.

Resume checks before it trusts. Each checkpoint records the run's *fingerprint*: what must
match for a resumed run to continue it exactly (the loop's :func:`run_fingerprint
<so8t_kedro.training.loop.run_fingerprint>`: the settings that shape the data order and the
optimiser, the base model's identity, the training data's digest). ``resolve_resume("latest",
root, fingerprint)`` takes the newest loadable checkpoint of an unfinished session (one without
``checkpoint_final``) whose fingerprint matches; an explicit path may name any checkpoint,
a finished session's too. A differing fingerprint is a :class:`ResumeMismatchError` listing
each differing field, unless the caller accepts the changes.

Resume: ``resolve_resume("latest", root, fingerprint)`` (or an explicit path) → :func:`load` →
``model.load_state_dict(state.trainable, strict=False)``, ``optimizer.load_state_dict``,
``scheduler.load_state_dict``, :func:`~so8t_kedro.training.state.restore_rng_state`, then
continue at ``state.epoch`` / ``state.position.index`` with the data order rebuilt from
``state.position.seed`` (the state itself: :mod:`so8t_kedro.training.state`). Under DDP
only the main process saves; the RNG states are rank 0's, which is enough because the loop
reseeds every rank at each optimiser step from (seed, rank, position).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

# What a checkpoint holds is training/state.py's.
from so8t_kedro.training.state import DataPosition, TrainingState

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
Kind = Literal["rolling", "epoch", "final", "emergency"]
KINDS: tuple[str, ...] = get_args(Kind)
STATUSES: tuple[str, ...] = ("running", "interrupted", "finished", "failed")

SESSION_INFO = "session_info.json"
META_FILE = "checkpoint.json"
TRAINABLE_FILE = "trainable.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
SCALER_FILE = "scaler.pt"
RNG_JSON_FILE = "rng.json"
RNG_TENSOR_FILE = "rng.safetensors"
TMP_PREFIX = ".tmp-"
CHECKPOINT_PREFIX = "checkpoint_"
SESSIONS_SUBDIR = ("checkpoints", "training")
RESUME_COMMAND = "kedro run --pipelines=training --params=training.resume=latest"

_ROLLING_RE = re.compile(r"^checkpoint_rolling_(\d+)_")


class CheckpointError(RuntimeError):
    """A checkpoint folder that cannot be loaded (missing, corrupt or unsafe content)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No loadable checkpoint where :func:`resolve_resume` / :func:`latest` looked."""


class ResumeMismatchError(CheckpointError):
    """The checkpoint to resume was saved by a run whose fingerprint differs from this one's."""


class TrainingInterrupted(Exception):
    """Raised by the loop after an emergency checkpoint was saved on a signal.

    ``exit_code`` is 128 + the signal number (130 SIGINT, 143 SIGTERM); entry points outside
    Kedro exit with it. ``str(exc)`` is the one-line resume hint.
    """

    def __init__(self, checkpoint_path: str | os.PathLike, signal_name: str | None,
                 signum: int | None = None):
        self.checkpoint_path = Path(checkpoint_path)
        self.signal_name = signal_name
        self.signum = signum
        self.exit_code = 128 + signum if signum else 1
        super().__init__(resume_hint(self.checkpoint_path, signal_name))


# --------------------------------------------------------------------------- file helpers


def _fsync_file(path: Path) -> None:
    with open(path, "r+b") as f:  # writable handle: Windows' fsync (_commit) needs one
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    """fsync a directory (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _torch_save(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def _write_json(obj: Any, path: Path, **dump_kwargs: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, **dump_kwargs)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(obj: Any, path: str | os.PathLike, **dump_kwargs: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (also used by the progress logger).

    The data goes to ``.tmp-<name>-<pid>`` beside ``path`` (created if missing), is fsynced,
    then renamed over ``path``; a failed write removes its temporary file, a killed one
    leaves a ``.tmp-*`` file that :class:`CheckpointManager` cleans on start.
    ``dump_kwargs`` go to :func:`json.dump` (e.g. ``allow_nan=False``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{os.getpid()}")
    try:
        _write_json(obj, tmp, **dump_kwargs)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _save_tensors(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    # One fresh contiguous CPU copy each: safetensors refuses tensors that share storage
    # (views, tied weights) or are not contiguous.
    save_file({k: v.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
               for k, v in tensors.items()}, str(path))
    _fsync_file(path)


def _remove_tree(path: Path) -> None:
    """Delete a folder without ever leaving a half-deleted one under its own name."""
    if not path.exists():
        return
    trash = path.with_name(f"{TMP_PREFIX}deleting-{path.name}-{os.getpid()}")
    os.replace(path, trash)
    _fsync_dir(path.parent)
    shutil.rmtree(trash, ignore_errors=True)


def _utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def new_session_id() -> str:
    """A timestamp session id (UTC, microseconds), lexicographically sortable by time."""
    return datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S_%f")


def sessions_dir(root: str | os.PathLike) -> Path:
    """``<root>/checkpoints/training``: the folder that holds the session folders."""
    return Path(root).joinpath(*SESSIONS_SUBDIR)


def resume_hint(checkpoint_path: str | os.PathLike, signal_name: str | None = None) -> str:
    """The one-line message printed when training stops on a signal."""
    by = f" by {signal_name}" if signal_name else ""
    return (f"Training interrupted{by}; emergency checkpoint saved to {checkpoint_path}. "
            f"Resume with: {RESUME_COMMAND} "
            f"(or --params=training.resume={checkpoint_path})")


# --------------------------------------------------------------------------- reading


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """``checkpoint.json`` of a checkpoint folder, checked for the files it lists.

    Raises :class:`CheckpointError` when the folder is not a complete checkpoint.
    """
    path = Path(path)
    meta_path = path / META_FILE
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint folder (no such directory)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} has no {META_FILE}: not a complete checkpoint") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{meta_path} is unreadable or corrupt: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{meta_path}: unknown checkpoint format {meta!r:.200}")
    missing = [name for name in meta.get("files", []) if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"{path} is incomplete: missing {', '.join(missing)}")
    return meta


def _torch_load(path: Path, map_location: Any) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(
            f"Refusing to load {path}: torch.load(weights_only=True) rejected it "
            f"(only plain state dicts of tensors and primitives are accepted): {exc}"
        ) from exc


def _load_tensors(path: Path, device: Any) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"Cannot read {path} as safetensors: {exc}") from exc


def load(path: str | os.PathLike, *, map_location: Any = "cpu") -> TrainingState:
    """Load a checkpoint folder: safetensors + JSON + ``torch.load(weights_only=True)`` only.

    ``map_location`` applies to the trainable tensors and the optimizer / scheduler / scaler
    states; RNG states always stay on the CPU (that is where torch expects them).
    """
    path = Path(path)
    meta = read_checkpoint_meta(path)
    files = set(meta["files"])
    trainable = _load_tensors(path / TRAINABLE_FILE, map_location)
    optimizer = _torch_load(path / OPTIMIZER_FILE, map_location) if OPTIMIZER_FILE in files \
        else None
    scheduler = _torch_load(path / SCHEDULER_FILE, map_location) if SCHEDULER_FILE in files \
        else None
    scaler = _torch_load(path / SCALER_FILE, map_location) if SCALER_FILE in files else None
    try:
        rng = json.loads((path / RNG_JSON_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path / RNG_JSON_FILE} is unreadable or corrupt: {exc}") from exc
    rng_tensors = _load_tensors(path / RNG_TENSOR_FILE, "cpu")
    rng["torch"] = rng_tensors["torch_cpu"]
    rng["cuda"] = [rng_tensors[f"torch_cuda_{i}"] for i in range(rng.pop("cuda_devices", 0))]
    position = meta.get("position") or {}
    return TrainingState(
        trainable=trainable, optimizer=optimizer, scheduler=scheduler, rng=rng,
        step=int(meta["step"]), epoch=int(meta["state_epoch"]),
        position=DataPosition(index=int(position.get("index", 0)),
                              seed=int(position.get("seed", 0))),
        params=meta.get("params") or {}, scaler=scaler,
        fingerprint=meta.get("fingerprint") or {},
    )


def _candidate_dirs(base: Path) -> tuple[list[Path], list[str]]:
    """Checkpoint folders under ``base`` (itself, a session, a sessions dir or a root)."""
    patterns = [".", f"{CHECKPOINT_PREFIX}*", f"*/{CHECKPOINT_PREFIX}*",
                f"{'/'.join(SESSIONS_SUBDIR)}/*/{CHECKPOINT_PREFIX}*"]
    found: dict[Path, None] = {}
    for pattern in patterns:
        matches = [base] if pattern == "." else base.glob(pattern)
        for p in matches:
            if (p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
                    and not p.parent.name.startswith(TMP_PREFIX)):
                found[p] = None
    return list(found), [str(base / p) for p in patterns]


def latest(session_dir_or_root: str | os.PathLike) -> Path:
    """The newest loadable checkpoint (by save time, then step) under a session dir or root.

    Accepts a checkpoint folder, a session folder, the folder of sessions, or a root that has
    ``checkpoints/training/<session>/``. ``.tmp-*`` folders are ignored; a folder whose
    ``checkpoint.json`` is missing or corrupt is skipped with a warning. Raises
    :class:`CheckpointNotFoundError` naming what was searched when nothing loadable is found.
    """
    return _newest_first(Path(session_dir_or_root))[0][0]


def _newest_first(base: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The loadable checkpoints under ``base`` with their metadata, newest first (see
    :func:`latest`); raises :class:`CheckpointNotFoundError` when there is none."""
    candidates, searched = _candidate_dirs(base) if base.is_dir() else ([], [str(base)])
    found: list[tuple[tuple[float, int, str], Path, dict[str, Any]]] = []
    skipped: list[str] = []
    for path in candidates:
        try:
            meta = read_checkpoint_meta(path)
            key = (float(meta["saved_at"]), int(meta["step"]), path.name)
        except (CheckpointError, KeyError, TypeError, ValueError) as exc:
            log.warning("Skipping checkpoint folder %s: %s", path, exc)
            skipped.append(str(path))
            continue
        found.append((key, path, meta))
    if not found:
        detail = f" (skipped as broken: {', '.join(skipped)})" if skipped else ""
        raise CheckpointNotFoundError(
            f"No loadable checkpoint found; searched {', '.join(searched)}{detail}"
        )
    found.sort(key=lambda item: item[0], reverse=True)
    return [(path, meta) for _, path, meta in found]


def session_finished(session_dir: str | os.PathLike) -> bool:
    """Whether a session saved its ``final`` checkpoint (its run has nothing left to do)."""
    return (Path(session_dir) / f"{CHECKPOINT_PREFIX}final").is_dir()


def fingerprint_differences(saved: Mapping[str, Any], current: Mapping[str, Any]
                            ) -> dict[str, tuple[Any, Any]]:
    """``{field: (saved, current)}`` for each fingerprint field whose values differ.

    ``current`` goes through JSON first, as ``saved`` did (tuples become lists).
    """
    current = json.loads(json.dumps(dict(current)))
    return {name: (saved.get(name), current.get(name))
            for name in sorted(set(saved) | set(current))
            if saved.get(name) != current.get(name)}


def _mismatch(path: Path, differences: Mapping[str, tuple[Any, Any]], *, others: int = 0
              ) -> ResumeMismatchError:
    fields = "; ".join(f"{name}: {old!r} in the checkpoint, {new!r} now"
                       for name, (old, new) in differences.items())
    older = (f" ({others} older unfinished checkpoint(s) do not match either)" if others
             else "")
    return ResumeMismatchError(
        f"training.resume: checkpoint {path} was saved by a run with other settings{older}: "
        f"{fields}. Resuming it would not continue that run exactly. Run with the "
        f"checkpoint's values, start afresh with --params=training.resume=null, or accept "
        f"the changes with --params=training.resume={path},training.resume_accept_changes=true"
    )


def resolve_resume(spec: str | os.PathLike | None, checkpoint_root: str | os.PathLike,
                   fingerprint: Mapping[str, Any] | None = None, *,
                   accept_changes: bool = False) -> Path | None:
    """Turn the ``training.resume`` parameter into a checkpoint folder.

    ``None`` / ``""`` / ``"none"`` → ``None`` (start from scratch). ``"latest"`` → the
    newest loadable checkpoint of an unfinished session under ``checkpoint_root`` whose
    fingerprint matches ``fingerprint`` (any, when ``fingerprint`` is None or
    ``accept_changes``). Anything else is a path (absolute, relative to the working
    directory, or relative to ``checkpoint_root``) to a checkpoint folder, or to a session
    folder whose newest checkpoint is taken, finished or not; its fingerprint must match
    unless ``accept_changes``. Raises :class:`CheckpointNotFoundError`,
    :class:`ResumeMismatchError` (naming each differing field) or :class:`CheckpointError`.
    """
    if spec is None or str(spec).strip().lower() in ("", "none", "null", "false"):
        return None
    check = fingerprint is not None and not accept_changes
    if str(spec).strip().lower() == "latest":
        found = _newest_first(Path(checkpoint_root))
        unfinished = [(p, m) for p, m in found if not session_finished(p.parent)]
        if not unfinished:
            raise CheckpointNotFoundError(
                f"training.resume=latest: every session under {checkpoint_root} has finished "
                f"(newest: {found[0][0].parent}); 'latest' does not resume a finished run. "
                f"To continue one, name its checkpoint: --params=training.resume={found[0][0]}")
        if not check:
            return unfinished[0][0]
        for path, meta in unfinished:
            if not fingerprint_differences(meta.get("fingerprint") or {}, fingerprint):
                return path
        path, meta = unfinished[0]
        raise _mismatch(path, fingerprint_differences(meta.get("fingerprint") or {},
                                                      fingerprint),
                        others=len(unfinished) - 1)
    path = Path(spec).expanduser()
    if not path.exists() and not path.is_absolute() and (Path(checkpoint_root) / path).exists():
        path = Path(checkpoint_root) / path
    if not path.exists():
        raise CheckpointNotFoundError(
            f"Resume checkpoint {spec!s} not found (looked at {Path(spec).resolve()} and "
            f"{Path(checkpoint_root) / spec})"
        )
    if not ((path / META_FILE).exists() or path.name.startswith(CHECKPOINT_PREFIX)):
        path = latest(path)
    meta = read_checkpoint_meta(path)  # clear error if incomplete/corrupt
    differences = (fingerprint_differences(meta.get("fingerprint") or {}, fingerprint)
                   if check else {})
    if differences:
        raise _mismatch(path, differences)
    return path


# --------------------------------------------------------------------------- the manager


class CheckpointManager:
    """Saves the checkpoints of one training session (see the module docstring).

    ``clock`` (monotonic seconds) drives :meth:`should_save` only; save times recorded on
    disk are wall-clock UTC. Creating a manager creates the session folder, removes stale
    ``.tmp-*`` folders left by a killed save, and marks the session ``running``.
    """

    def __init__(self, session_dir: str | os.PathLike, *, interval_seconds: float = 180,
                 max_checkpoints: int = 5, clock: Callable[[], float] = time.monotonic,
                 params: Mapping[str, Any] | None = None):
        if max_checkpoints < 1:
            raise ValueError(f"max_checkpoints must be >= 1, got {max_checkpoints}")
        self.session_dir = Path(session_dir)
        self.session_id = self.session_dir.name
        self.interval_seconds = float(interval_seconds)
        self.max_checkpoints = int(max_checkpoints)
        self.clock = clock
        self.session_dir.mkdir(parents=True, exist_ok=True)
        self.clean_stale_tmp()
        info = self._read_info()
        self._info: dict[str, Any] = {
            "session_id": self.session_id,
            "created_at": info.get("created_at") or datetime.now(timezone.utc).isoformat(),
            "updated_at": None,
            "status": "running",
            "params": dict(params) if params is not None else info.get("params", {}),
            "interval_seconds": self.interval_seconds,
            "max_checkpoints": self.max_checkpoints,
            "checkpoints": [],
        }
        self._last_save = self.clock()
        self._write_info()

    @classmethod
    def create(cls, root: str | os.PathLike, *, session_id: str | None = None,
               **kwargs: Any) -> CheckpointManager:
        """A manager for a (new, by default) session under ``<root>/checkpoints/training/``."""
        return cls(sessions_dir(root) / (session_id or new_session_id()), **kwargs)

    # ---------------------------------------------------------------- session info

    def _read_info(self) -> dict[str, Any]:
        try:
            info = json.loads((self.session_dir / SESSION_INFO).read_text(encoding="utf-8"))
            return info if isinstance(info, dict) else {}
        except (OSError, ValueError):
            return {}

    def _scan(self) -> list[dict[str, Any]]:
        entries = []
        for path in sorted(self.session_dir.glob(f"{CHECKPOINT_PREFIX}*")):
            try:
                meta = read_checkpoint_meta(path)
            except CheckpointError as exc:
                log.warning("Session %s: ignoring %s", self.session_id, exc)
                continue
            entries.append({"kind": meta["kind"], "step": meta["step"], "epoch": meta["epoch"],
                            "path": path.name, "saved_at": meta["saved_at"],
                            "time": meta["saved_at_iso"]})
        entries.sort(key=lambda e: (e["saved_at"], e["step"], e["path"]))
        return entries

    def _write_info(self) -> None:
        self._info["checkpoints"] = self._scan()
        self._info["updated_at"] = datetime.now(timezone.utc).isoformat()
        write_json_atomic(self._info, self.session_dir / SESSION_INFO)

    def set_status(self, status: str, **extra: Any) -> None:
        """Set the session status (running / interrupted / finished / failed) + JSON extras."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self._info["status"] = status
        self._info.update(extra)
        self._write_info()

    def clean_stale_tmp(self) -> list[Path]:
        """Remove ``.tmp-*`` leftovers of killed saves/deletes; returns what was removed."""
        removed = []
        for path in self.session_dir.glob(f"{TMP_PREFIX}*"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
        if removed:
            log.info("Removed %d stale temporary item(s) in %s", len(removed), self.session_dir)
        return removed

    # ---------------------------------------------------------------- saving

    def should_save(self) -> bool:
        """True once ``interval_seconds`` have passed (on ``clock``) since the last save."""
        return self.clock() - self._last_save >= self.interval_seconds

    def checkpoints(self) -> list[Path]:
        """Complete checkpoint folders of this session, oldest first."""
        return [self.session_dir / e["path"] for e in self._scan()]

    def _folder_name(self, kind: str, step: int, epoch: int | None) -> str:
        if kind == "rolling":
            return f"checkpoint_rolling_{step:08d}_{_utc_stamp()}"
        if kind == "epoch":
            return f"checkpoint_epoch_{epoch}"
        if kind == "final":
            return "checkpoint_final"
        return f"checkpoint_emergency_{_utc_stamp()}"

    def save(self, kind: Kind, state: TrainingState, *, step: int | None = None,
             epoch: int | None = None) -> Path:
        """Write ``state`` atomically as a ``kind`` checkpoint; returns its folder.

        ``step`` defaults to ``state.step`` (a different value is an error). ``epoch`` names
        ``checkpoint_epoch_<N>`` and defaults to ``state.epoch``. Saving ``final`` marks the
        session ``finished``. Any save restarts the :meth:`should_save` interval.

        Re-saving a name that exists (``epoch``/``final`` again in the same session) moves
        the old folder aside (to ``.tmp-deleting-…``) just before the rename; a kill in that
        instant loses that one folder, never leaves a half-written one.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if step is not None and int(step) != int(state.step):
            raise ValueError(f"step={step} but state.step={state.step}")
        step = int(state.step)
        epoch = int(state.epoch if epoch is None else epoch)
        name = self._folder_name(kind, step, epoch)
        final = self.session_dir / name
        tmp = self.session_dir / f"{TMP_PREFIX}{name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            self._write_folder(tmp, kind, state, step, epoch)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # e.g. unserialisable params: no leftover
            raise
        _remove_tree(final)  # re-saving an epoch/final of this session: replace it
        os.replace(tmp, final)
        _fsync_dir(self.session_dir)
        if kind == "rolling":
            self._prune_rolling()
        if kind == "final":
            self._info["status"] = "finished"
        self._write_info()
        self._last_save = self.clock()
        log.info("Saved %s checkpoint (step %d) to %s", kind, step, final)
        return final

    def _write_folder(self, tmp: Path, kind: str, state: TrainingState, step: int,
                      epoch: int) -> None:
        files = self._write_state(state, tmp)
        now = time.time()
        _write_json({
            "format": FORMAT_VERSION,
            "kind": kind, "step": step, "epoch": epoch,  # step is state.step (save checks)
            "state_epoch": int(state.epoch),
            "position": {"index": int(state.position.index), "seed": int(state.position.seed)},
            "params": state.params,
            "fingerprint": state.fingerprint,
            "session_id": self.session_id,
            "saved_at": now,
            "saved_at_iso": datetime.fromtimestamp(now, timezone.utc).isoformat(),
            "torch_version": torch.__version__,
            "files": files,
        }, tmp / META_FILE)
        _fsync_dir(tmp)

    def _write_state(self, state: TrainingState, folder: Path) -> list[str]:
        _save_tensors(state.trainable, folder / TRAINABLE_FILE)
        files = [TRAINABLE_FILE]
        for obj, name in ((state.optimizer, OPTIMIZER_FILE), (state.scheduler, SCHEDULER_FILE),
                          (state.scaler, SCALER_FILE)):
            if obj is not None:
                _torch_save(obj, folder / name)
                files.append(name)
        rng = dict(state.rng)
        cuda = list(rng.pop("cuda", None) or [])
        tensors = {"torch_cpu": rng.pop("torch")}
        tensors.update({f"torch_cuda_{i}": t for i, t in enumerate(cuda)})
        _save_tensors(tensors, folder / RNG_TENSOR_FILE)
        _write_json({**rng, "cuda_devices": len(cuda)}, folder / RNG_JSON_FILE)
        return [*files, RNG_TENSOR_FILE, RNG_JSON_FILE]

    def _prune_rolling(self) -> None:
        rolling = []
        for path in self.session_dir.glob("checkpoint_rolling_*"):
            match = _ROLLING_RE.match(path.name)
            if path.is_dir() and match:
                rolling.append((int(match.group(1)), path.name, path))
        rolling.sort()
        for _, _, path in rolling[: max(0, len(rolling) - self.max_checkpoints)]:
            _remove_tree(path)

    def interrupt(self, state: TrainingState, shutdown: ShutdownFlag) -> TrainingInterrupted:
        """On a stop request: save ``emergency``, mark ``interrupted``, print the resume hint.

        Returns the :class:`TrainingInterrupted` for the loop to ``raise``.
        """
        path = self.save("emergency", state)
        exc = TrainingInterrupted(path, shutdown.signal_name, shutdown.signum)
        self.set_status("interrupted", signal=shutdown.signal_name, resume=str(path))
        print(str(exc), flush=True)
        return exc


# --------------------------------------------------------------------------- signals


def _default_signals() -> tuple[signal.Signals, ...]:
    names = ("SIGINT", "SIGTERM", "SIGBREAK")  # SIGBREAK: Windows Ctrl-Break only
    return tuple(getattr(signal, n) for n in names if hasattr(signal, n))


DEFAULT_SIGNALS = _default_signals()


class ShutdownFlag:
    """Set by :func:`graceful_shutdown`'s handler; the loop polls ``requested``."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self.signal_name: str | None = None

    def __bool__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, frame: Any) -> None:
        # Only flag assignments here: no I/O, no locks, nothing that may re-enter.
        if self.requested and signum == getattr(signal, "SIGINT", None):
            # Second Ctrl-C while stopping: behave like Python's default (KeyboardInterrupt),
            # which aborts the emergency save; earlier checkpoints stay valid (atomic writes).
            signal.default_int_handler(signum, frame)
        self.request(signum)

    def request(self, signum: int | None) -> None:
        """Mark a stop as requested, by ``signum`` when a signal asked (the loop also calls
        this on ranks that learn of another rank's signal)."""
        self.signum = signum
        self.signal_name = signal.Signals(signum).name if signum else None
        self.requested = True


@contextmanager
def graceful_shutdown(signals: Sequence[int] = DEFAULT_SIGNALS) -> Iterator[ShutdownFlag]:
    """Turn ``signals`` into a flag the loop checks at a safe point; restore handlers after.

    The handler only records the signal. A second SIGINT while the stop is pending raises
    ``KeyboardInterrupt`` (Python's default handler), so a hung save can still be aborted;
    other repeated signals are just recorded again. Outside the main thread (where Python
    cannot install handlers) nothing is installed and a warning is logged.
    """
    flag = ShutdownFlag()
    if threading.current_thread() is not threading.main_thread():
        log.warning("graceful_shutdown: not in the main thread; signal handlers not installed")
        yield flag
        return
    previous = {}
    try:
        for sig in signals:
            previous[sig] = signal.signal(sig, flag._handle)
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "CheckpointNotFoundError",
    "ResumeMismatchError",
    "ShutdownFlag",
    "TrainingInterrupted",
    "fingerprint_differences",
    "graceful_shutdown",
    "latest",
    "load",
    "new_session_id",
    "resolve_resume",
    "session_finished",
    "write_json_atomic",
]
