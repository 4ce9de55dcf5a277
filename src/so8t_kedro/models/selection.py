"""Which model: the base (a real model or the embedded default) and the adapter on it.

Every node that loads a model asks here, so that training, evaluation, the A/B test and the
export agree on what "the base" and "the adapter" are:

* ``chosen_base_dir``: ``base_model.path`` when set, else the embedded default;
* ``training_params_for``: the training parameters for that base;
* ``resolve_model_dirs``: a model spec (``{name, adapter}``) to its base and adapter
  directories, an adapter on the base it was trained on.

A spec may name a saved version of ``so8t_adapter``, so this module reads Kedro's version
stamps (``VERSION_FORMAT``) and its versioned folder layout.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from kedro.io.core import VERSION_FORMAT

logger = logging.getLogger(__name__)


def chosen_base_dir(base_model_params: Mapping[str, Any],
                    embedded_base_model_dir: str | os.PathLike) -> Path:
    """``base_model.path`` when set (a real model), else the embedded default's directory."""
    return Path(base_model_params.get("path") or embedded_base_model_dir)


def training_params_for(base_model_params: Mapping[str, Any],
                        training_params: Mapping[str, Any]) -> dict[str, Any]:
    """``params:training`` for the chosen base: with the embedded default (``base_model.path``
    null), ``base_model.embedded_training`` is merged over it, key by key; a real model
    (Borea) trains with ``params:training`` as it is.

    The embedded default is a model of 1-2 M parameters that must learn the decision in a
    few CPU minutes; the QLoRA settings made for a 3.8 B model are not its recipe.
    """
    merged = copy.deepcopy(dict(training_params))
    if base_model_params.get("path"):
        return merged

    def merge(into: dict, overrides: Mapping[str, Any], where: str) -> None:
        for key, value in overrides.items():
            if key not in into:
                raise KeyError(f"base_model.embedded_training.{where}{key}: params:training "
                               "has no such key")
            if isinstance(value, Mapping) and isinstance(into[key], dict):
                merge(into[key], value, f"{where}{key}.")
            else:
                into[key] = copy.deepcopy(value)

    merge(merged, base_model_params.get("embedded_training") or {}, "")
    return merged


def resolve_model_dirs(
    embedded_base_model_dir: Path,
    catalog_adapter_dir: Path,
    base_model_params: Mapping[str, Any],
    model_spec: Mapping[str, Any],
) -> tuple[Path, Path | None]:
    """(base directory, adapter directory or None) for a model spec.

    The base is ``base_model.path`` when set, else the catalog's embedded base model; an
    adapter goes on the base it was trained on when that is still on disk (see
    :func:`_trained_base`). The spec's ``adapter``: ``null`` (the base alone), ``catalog``
    (``so8t_adapter`` as the catalog loads it: latest, or ``--load-versions``), a version
    stamp of ``so8t_adapter`` (e.g. ``2026-11-22T10.15.30.123Z``) or a directory path.
    """
    base = chosen_base_dir(base_model_params, embedded_base_model_dir)
    adapter = model_spec.get("adapter")
    if adapter is None:
        return base, None
    adapter_dir = _adapter_dir(Path(catalog_adapter_dir), str(adapter), model_spec.get("name"))
    return _trained_base(adapter_dir, base), adapter_dir


def _is_version_stamp(text: str) -> bool:
    """True for a Kedro version stamp such as ``2026-11-22T10.15.30.123Z``."""
    try:
        datetime.strptime(text, VERSION_FORMAT)
    except ValueError:
        return False
    return True


def _adapter_dir(catalog_adapter_dir: Path, adapter: str, model_name: object) -> Path:
    if adapter == "catalog":
        return catalog_adapter_dir
    if _is_version_stamp(adapter):
        # Kedro's versioned layout: <filepath>/<version>/<basename of filepath>.
        versions = catalog_adapter_dir.parent.parent
        candidate = versions / adapter / catalog_adapter_dir.name
        if not candidate.is_dir():
            raise FileNotFoundError(
                f"model {model_name!r}: so8t_adapter has no version {adapter!r}; "
                f"available: {sorted(p.name for p in versions.iterdir() if p.is_dir())}"
            )
        return candidate
    candidate = Path(adapter).expanduser()
    if not candidate.is_dir():
        raise FileNotFoundError(
            f"model {model_name!r}: adapter directory {str(candidate)!r} does not exist "
            "(adapter must be null, 'catalog', a so8t_adapter version or a directory)"
        )
    return candidate


def _trained_base(adapter_dir: Path, base: Path) -> Path:
    """The base model ``adapter_dir`` was trained on, which PEFT records in
    ``adapter_config.json``, while it is still on disk; else ``base``, with a warning.

    An older adapter (``--load-versions``) is then scored on its own base even after the
    embedded base was rebuilt from a changed corpus.
    """
    config = adapter_dir / "adapter_config.json"
    recorded = json.loads(config.read_text()).get("base_model_name_or_path") if (
        config.is_file()) else None
    if not recorded or Path(recorded) == base:
        return base
    if Path(recorded).is_dir():
        logger.info("Adapter %s is scored on the base it was trained on, %s", adapter_dir,
                    recorded)
        return Path(recorded)
    logger.warning("Adapter %s was trained on %s, which no longer exists; scoring it on %s",
                   adapter_dir, recorded, base)
    return base


__all__ = ["chosen_base_dir", "resolve_model_dirs", "training_params_for"]
