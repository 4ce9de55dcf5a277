"""Which model: the base (a real model or the embedded default) and the adapter on it.

Every node that loads a model asks here, so that training, evaluation, the A/B test and the
export agree on what "the base" and "the adapter" are:

* ``chosen_base_dir``: ``base_model.path`` when set, else the embedded default;
* ``training_params_for``: the training parameters for that base;
* ``resolve_model_dirs``: a model spec (``{name, adapter}``) to its base and adapter
  directories, an adapter on the base it was trained on;
* ``resolve_model`` / ``resolve_catalog_adapter``: the same, once per run, as a
  :class:`ModelReference`: what one resolving node of a pipeline hands to the nodes that
  score, export or serve the model, so none of them resolves it again.

A spec may name a saved version of ``so8t_adapter``, so this module reads Kedro's version
stamps (``VERSION_FORMAT``) and its versioned folder layout.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from kedro.io.core import VERSION_FORMAT

logger = logging.getLogger(__name__)

#: What a model spec's ``kind`` can name (``language_model`` when it has none): a causal LM
#: (a base, and an adapter on it) or the evaluation's reference classifier (the
#: ``reference_classifier`` dataset), which an A/B arm may be.
LANGUAGE_MODEL = "language_model"
REFERENCE_CLASSIFIER = "reference_classifier"
MODEL_KINDS = (LANGUAGE_MODEL, REFERENCE_CLASSIFIER)

#: ``so8t_adapter`` as the catalog loads it (the latest, or
#: ``--load-versions=so8t_adapter:<version>``): the adapter the export bakes.
CATALOG_ADAPTER: Mapping[str, Any] = {"name": "so8t", "adapter": "catalog"}


@dataclass(frozen=True)
class ModelReference:
    """Which model, resolved once: what scoring, export and serving nodes load.

    ``name`` is what predictions and reports call it. A language model (``kind``
    ``language_model``) is ``base_dir`` plus ``adapter_dir`` (None: the base alone); the
    reference classifier (``kind`` ``reference_classifier``) has neither: it is the
    ``reference_classifier`` dataset.
    """

    name: str
    base_dir: Path | None
    adapter_dir: Path | None = None
    kind: str = LANGUAGE_MODEL

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model {self.name!r}: kind must be one of "
                             f"{', '.join(MODEL_KINDS)}, got {self.kind!r}")
        if self.kind == LANGUAGE_MODEL and self.base_dir is None:
            raise ValueError(f"model {self.name!r}: a language model needs a base directory")
        if self.kind == REFERENCE_CLASSIFIER and (self.base_dir or self.adapter_dir):
            raise ValueError(f"model {self.name!r}: the reference classifier has no base or "
                             "adapter directory")


def chosen_base_dir(base_model_params: Mapping[str, Any],
                    embedded_base_model_dir: str | os.PathLike) -> Path:
    """``base_model.path`` when set (a real model), else the embedded default's directory."""
    return Path(base_model_params["path"] or embedded_base_model_dir)


def training_params_for(base_model_params: Mapping[str, Any],
                        training_params: Mapping[str, Any]) -> dict[str, Any]:
    """``params:training`` for the chosen base: with the embedded default (``base_model.path``
    null), ``base_model.embedded_training`` is merged over it, key by key; a real model
    (Borea) trains with ``params:training`` as it is.

    The embedded default is a model of 1-2 M parameters that must learn the decision in a
    few CPU minutes; the QLoRA settings made for a 3.8 B model are not its recipe.
    """
    merged = copy.deepcopy(dict(training_params))
    if base_model_params["path"]:
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

    merge(merged, base_model_params["embedded_training"], "")
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
    adapter = model_spec["adapter"]
    if adapter is None:
        return base, None
    adapter_dir = _adapter_dir(Path(catalog_adapter_dir), str(adapter), model_spec["name"])
    return _trained_base(adapter_dir, base), adapter_dir


def resolve_model(
    embedded_base_model_dir: Path,
    catalog_adapter_dir: Path,
    base_model_params: Mapping[str, Any],
    model_spec: Mapping[str, Any],
) -> ModelReference:
    """The :class:`ModelReference` a model spec (``{name, adapter}``, and ``kind`` for an A/B
    arm) names: its base and adapter as :func:`resolve_model_dirs` finds them; for ``kind:
    reference_classifier``, the name alone (its ``adapter`` is ignored).

    Raises ``ValueError`` for an unknown ``kind``, ``FileNotFoundError`` for an adapter
    that is not there.
    """
    name, kind = str(model_spec["name"]), model_spec.get("kind", LANGUAGE_MODEL)
    if kind != LANGUAGE_MODEL:
        return ModelReference(name=name, base_dir=None, kind=kind)
    base, adapter = resolve_model_dirs(embedded_base_model_dir, catalog_adapter_dir,
                                       base_model_params, model_spec)
    return ModelReference(name=name, base_dir=base, adapter_dir=adapter)


def resolve_catalog_adapter(
    embedded_base_model_dir: Path,
    catalog_adapter_dir: Path,
    base_model_params: Mapping[str, Any],
) -> ModelReference:
    """:func:`resolve_model` of :data:`CATALOG_ADAPTER`: ``so8t_adapter`` as the catalog
    loads it, on the base it was trained on (what the export bakes)."""
    return resolve_model(embedded_base_model_dir, catalog_adapter_dir, base_model_params,
                         CATALOG_ADAPTER)


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


__all__ = [
    "CATALOG_ADAPTER",
    "LANGUAGE_MODEL",
    "MODEL_KINDS",
    "REFERENCE_CLASSIFIER",
    "ModelReference",
    "chosen_base_dir",
    "resolve_catalog_adapter",
    "resolve_model",
    "resolve_model_dirs",
    "training_params_for",
]
