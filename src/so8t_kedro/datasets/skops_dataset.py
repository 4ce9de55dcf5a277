"""A (versioned) Kedro dataset for a scikit-learn model saved with skops, never as a pickle.

``skops.io.load`` rebuilds the object from a JSON schema and refuses any type outside its
defaults (scikit-learn estimators, numpy arrays, Python builtins) and the ``trusted`` list,
so loading a file runs no code it carries. The catalog entry states that list explicitly
(``trusted: []`` when the defaults suffice); a tampered file with any other type fails to
load with skops' ``UntrustedTypesFoundException``.
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath
from typing import Any

import fsspec
import skops.io
from kedro.io.core import (
    AbstractVersionedDataset,
    DatasetError,
    Version,
    get_filepath_str,
    get_protocol_and_path,
)


class SkopsDataset(AbstractVersionedDataset[Any, Any]):
    """A model file written by ``skops.io.dump`` and read by ``skops.io.load``.

    Example ``catalog.yml``::

        reference_classifier:
          type: so8t_kedro.datasets.SkopsDataset
          filepath: data/06_models/reference_classifier.skops
          trusted: []        # types trusted beyond skops' defaults
          versioned: true

    Load a version with ``kedro run --load-versions=reference_classifier:<version>``.
    """

    def __init__(
        self,
        *,
        filepath: str | os.PathLike,
        trusted: list[str],
        version: Version | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Create a dataset for the file ``filepath``.

        Args:
            filepath: Path of the file, with an fsspec protocol or none (local).
            trusted: Fully qualified names of the types trusted beyond skops' defaults, as
                ``skops.io.get_untrusted_types`` writes them; required, so that the
                catalog always says what a load may construct.
            version: ``kedro.io.core.Version`` (``load=None``: latest).
            credentials, fs_args: Passed to the fsspec filesystem.
            metadata: Ignored by Kedro (kedro-viz layer etc.).
        """
        if not isinstance(trusted, list) or not all(isinstance(t, str) for t in trusted):
            raise DatasetError(f"SkopsDataset: trusted must be a list of type names, got "
                               f"{trusted!r} (a blanket 'trust everything' is not offered)")
        protocol, path = get_protocol_and_path(str(filepath), version)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol, **(credentials or {}), **(fs_args or {}))
        self._trusted = list(trusted)
        self.metadata = metadata
        super().__init__(filepath=PurePosixPath(path), version=version,
                         exists_function=self._fs.exists, glob_function=self._fs.glob)

    def load(self) -> Any:
        load_path = get_filepath_str(self._get_load_path(), self._protocol)
        with self._fs.open(load_path, mode="rb") as file:
            return skops.io.load(file, trusted=self._trusted)

    def save(self, data: Any) -> None:
        save_path = get_filepath_str(self._get_save_path(), self._protocol)
        self._fs.makedirs(str(PurePosixPath(save_path).parent), exist_ok=True)
        with self._fs.open(save_path, mode="wb") as file:
            skops.io.dump(data, file)
        self._invalidate_cache()

    def _exists(self) -> bool:
        try:
            load_path = get_filepath_str(self._get_load_path(), self._protocol)
        except DatasetError:
            return False
        return self._fs.exists(load_path)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "protocol": self._protocol,
                "trusted": self._trusted, "version": self._version}

    def _release(self) -> None:
        super()._release()
        self._invalidate_cache()

    def _invalidate_cache(self) -> None:
        self._fs.invalidate_cache(get_filepath_str(self._filepath, self._protocol))
