"""A versioned Kedro dataset whose data is a Hugging Face-style *directory*.

Models, PEFT adapters and tokenizers are saved with ``save_pretrained(dir)``, which
writes several files (``config.json``, ``model.safetensors``, ``adapter_config.json``,
``tokenizer.json`` ...) into one folder. This dataset makes such a folder a versioned
catalog entry, so an evaluation can be re-run against any earlier model with
``kedro run --load-versions=<name>:<version>`` (see DESIGN.md, "Data catalog").

Local filesystem only: saving relies on an atomic ``os.replace`` of a fully written
temporary sibling directory, which object stores (``s3://``, ``gs://``...) do not have.
Windows drive paths (``D:/webdataset/...``) are local and fine.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import fsspec
from kedro.io.core import (
    AbstractVersionedDataset,
    DatasetError,
    Version,
    get_protocol_and_path,
)
from kedro_datasets._typing import JSONPreview

_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"


class SavesPretrained(Protocol):
    """Anything with ``save_pretrained(path)``: a model, tokenizer, PeftModel, bundle."""

    def save_pretrained(self, save_directory: str, *args: Any, **kwargs: Any) -> Any: ...


class HFDirectoryDataset(AbstractVersionedDataset[SavesPretrained, Path]):
    """A (versioned) directory written by ``save_pretrained``; loads as its ``Path``.

    ``save(obj)`` calls ``obj.save_pretrained(<tmp dir>)`` and then renames the finished
    directory into place, so a crash never leaves a half-written version behind. With
    ``versioned: true`` the layout is ``<filepath>/<version>/<basename>/`` as for every
    Kedro versioned dataset; without it, saving replaces ``<filepath>`` (the old directory
    is deleted only once the new one is in place).

    ``load()`` returns the resolved directory (``pathlib.Path``) of the requested or
    latest version, *not* a model: the consumer decides how to materialise it
    (4-bit/8-bit quantisation, dtype, ``device_map``, base model + adapter, tokenizer
    only...), and those choices differ between training, evaluation and GGUF export.
    Loading weights here would fix one choice and could load gigabytes that a node
    only needs the path of.

    Example ``catalog.yml``::

        so8t_adapter:
          type: so8t_kedro.datasets.HFDirectoryDataset
          filepath: ${globals:webdataset_root}/06_models/so8t_adapter
          versioned: true
          save_args: {safe_serialization: true}
    """

    def __init__(
        self,
        *,
        filepath: str | os.PathLike,
        version: Version | None = None,
        save_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Create a dataset for the directory ``filepath``.

        Args:
            filepath: Local directory path (no protocol, or ``file://``).
            version: ``kedro.io.core.Version``; ``load=None`` means latest,
                ``save=None`` means a new timestamp.
            save_args: Extra keyword arguments for ``save_pretrained``.
            metadata: Arbitrary metadata, ignored by Kedro (kedro-viz layer etc.).
        """
        protocol, path = get_protocol_and_path(str(filepath), version)
        if protocol != "file":
            raise DatasetError(
                f"HFDirectoryDataset supports the local filesystem only, got "
                f"protocol '{protocol}' for '{filepath}'."
            )
        self._protocol = protocol
        self._fs = fsspec.filesystem("file")
        self._save_args = dict(save_args or {})
        self.metadata = metadata
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._dir_exists,
            glob_function=self._glob_versions,
        )

    # -- filesystem helpers ------------------------------------------------------------

    @staticmethod
    def _dir_exists(path: str) -> bool:
        return Path(path).is_dir()

    def _glob_versions(self, pattern: str) -> list[str]:
        """Glob for version dirs, skipping leftovers of interrupted saves (``.tmp-*``)."""
        return [
            p
            for p in self._fs.glob(pattern)
            if not PurePosixPath(p).parent.name.startswith((_TMP_PREFIX, _OLD_PREFIX))
        ]

    # -- Kedro API -----------------------------------------------------------------------

    def load(self) -> Path:
        load_path = Path(str(self._get_load_path()))
        if not load_path.is_dir():
            raise DatasetError(
                f"HFDirectoryDataset directory '{load_path}' does not exist "
                f"(or is not a directory); save a model to it first."
            )
        return load_path.resolve()

    def save(self, data: SavesPretrained) -> None:
        if not callable(getattr(data, "save_pretrained", None)):
            raise DatasetError(
                f"HFDirectoryDataset can only save objects with a 'save_pretrained' "
                f"method, got {type(data).__name__}."
            )
        save_path = Path(str(self._get_save_path()))
        token = uuid.uuid4().hex[:8]
        # Versioned: build the whole <version>/ dir aside, then rename it, so that the
        # version appears complete or not at all.
        target = save_path.parent if self._version else save_path
        staging_root = target.with_name(f"{_TMP_PREFIX}{target.name}-{token}")
        write_dir = staging_root / save_path.name if self._version else staging_root
        write_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            data.save_pretrained(str(write_dir), **self._save_args)
            if not write_dir.is_dir():
                raise DatasetError(
                    f"{type(data).__name__}.save_pretrained did not create a "
                    f"directory at '{write_dir}'."
                )
            self._move_into_place(staging_root, target, token)
        finally:
            if staging_root.exists():
                shutil.rmtree(staging_root, ignore_errors=True)
        self._fs.invalidate_cache(str(self._filepath))

    @staticmethod
    def _move_into_place(staged: Path, target: Path, token: str) -> None:
        if not target.exists():
            os.replace(staged, target)
            return
        # Non-versioned overwrite: move the old dir aside, put the new one in place,
        # and only then delete the old one (restored if the swap fails).
        old = target.with_name(f"{_OLD_PREFIX}{target.name}-{token}")
        os.replace(target, old)
        try:
            os.replace(staged, target)
        except BaseException:
            os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)

    def _exists(self) -> bool:
        try:
            load_path = self._get_load_path()
        except DatasetError:
            return False
        return Path(str(load_path)).is_dir()

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": self._filepath,
            "protocol": self._protocol,
            "version": self._version,
            "save_args": self._save_args,
        }

    def _release(self) -> None:
        super()._release()
        self._fs.invalidate_cache(str(self._filepath))

    # -- kedro-viz -----------------------------------------------------------------------

    def preview(self, max_files: int = 50) -> JSONPreview:
        """Files (relative path, bytes) of the loaded directory, plus ``config.json``'s
        ``model_type``/``architectures`` when present, as a kedro-viz JSON preview."""
        directory = self.load()
        files = sorted(p for p in directory.rglob("*") if p.is_file())
        info: dict[str, Any] = {
            "path": directory.as_posix(),
            "version": directory.parent.name if self._version else None,
            "n_files": len(files),
            "total_bytes": sum(p.stat().st_size for p in files),
            "files": [
                {"name": p.relative_to(directory).as_posix(), "size_bytes": p.stat().st_size}
                for p in files[:max_files]
            ],
        }
        config = directory / "config.json"
        if config.is_file():
            try:
                cfg = json.loads(config.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                cfg = {}
            if isinstance(cfg, dict):
                for key in ("model_type", "architectures"):
                    if key in cfg:
                        info[key] = cfg[key]
        return JSONPreview(json.dumps(info))
