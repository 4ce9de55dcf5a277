"""Typed parameters: one pydantic model per ``conf/base/parameters_*.yml`` file, checked
against a run's merged parameters when the run starts (:class:`so8t_kedro.hooks.
ParameterValidationHooks`).

Every model forbids unknown keys and coerces nothing (see :class:`._base.Strict`); its
fields have no defaults except keys the YAML leaves out on purpose (documented beside
each), so the values live in the YAML alone and nodes read ``params["key"]``.
:func:`parameter_problems` lists every unknown, missing or mistyped key as
``<file>: <dotted path>: <reason>``; :func:`validate_parameters` raises them as one
:class:`ParametersError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from so8t_kedro.models.selection import training_params_for
from so8t_kedro.parameters.ab_test import AbTestFile
from so8t_kedro.parameters.data_processing import DataProcessingFile
from so8t_kedro.parameters.evaluation import EvaluationFile
from so8t_kedro.parameters.export import ExportFile
from so8t_kedro.parameters.pii import (
    PiiAllowListFile,
    PiiBrandsFile,
    PiiFile,
    PiiGivenNamesFile,
    PiiGivenNamesRegionalFile,
    PiiJapaneseRomajiFile,
    PiiRoleNounsFile,
)
from so8t_kedro.parameters.rehearsal import RehearsalFile
from so8t_kedro.parameters.run_settings import (
    ModelCardsFile,
    RunHooksFile,
    ServeFile,
    ThinkingSftFile,
    TrackingFile,
)
from so8t_kedro.parameters.training import TrainingFile, TrainingParameters

# File name -> its model, whose fields are the file's top-level keys: conf/base's files, and
# an environment's file for the top-level keys only that environment has.
PARAMETER_FILES: dict[str, type[BaseModel]] = {
    "parameters_ab_test.yml": AbTestFile,
    "parameters_data_processing.yml": DataProcessingFile,
    "parameters_evaluation.yml": EvaluationFile,
    "parameters_export.yml": ExportFile,
    "parameters_model_cards.yml": ModelCardsFile,
    "parameters_pii.yml": PiiFile,
    "parameters_pii_allow_list.yml": PiiAllowListFile,
    "parameters_pii_brands.yml": PiiBrandsFile,
    "parameters_pii_given_names.yml": PiiGivenNamesFile,
    "parameters_pii_given_names_regional.yml": PiiGivenNamesRegionalFile,
    "parameters_pii_japanese_romaji.yml": PiiJapaneseRomajiFile,
    "parameters_pii_role_nouns.yml": PiiRoleNounsFile,
    "parameters_rehearsal.yml": RehearsalFile,  # conf/rehearsal
    "parameters_run_hooks.yml": RunHooksFile,
    "parameters_serve.yml": ServeFile,
    "parameters_thinking_sft.yml": ThinkingSftFile,
    "parameters_tracking.yml": TrackingFile,
    "parameters_training.yml": TrainingFile,
}
TRAINING_FILE = "parameters_training.yml"
_MAX_SHOWN_CHARS = 80


class ParametersError(ValueError):
    """The run's parameters do not match their models; one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"{len(self.problems)} invalid parameter(s) (conf/<env>/parameters_*.yml merged "
            "with --params):\n  " + "\n  ".join(self.problems))


def _dotted(loc: tuple[Any, ...], data: Any) -> str:
    """The error's location as a path into ``data``: segments that are not keys or indices
    of the data (pydantic's names for the members of a union) are left out."""
    parts, node = [], data
    for index, segment in enumerate(loc):
        in_mapping = isinstance(node, Mapping) and segment in node
        in_list = (isinstance(node, Sequence) and not isinstance(node, str)
                   and isinstance(segment, int) and -len(node) <= segment < len(node))
        if in_mapping or in_list:
            node = node[segment]
        elif index == len(loc) - 1 and isinstance(node, Mapping):
            node = None  # a missing key
        else:
            continue
        parts.append(f"[{segment}]" if isinstance(segment, int) else str(segment))
    return ".".join(parts).replace(".[", "[")


def _reason(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "missing key"
    shown = repr(error.get("input"))
    if len(shown) > _MAX_SHOWN_CHARS:
        shown = shown[:_MAX_SHOWN_CHARS] + "..."
    return f"{error['msg']} (got {shown})"


def _problems(file: str, model: type[BaseModel], data: Mapping[str, Any]) -> list[str]:
    try:
        model.model_validate(data)
    except ValidationError as error:
        lines = []
        for item in error.errors():
            line = f"{file}: {_dotted(tuple(item['loc']), data)}: {_reason(item)}"
            if line not in lines:
                lines.append(line)
        return lines
    return []


def _embedded_training_problems(params: Mapping[str, Any]) -> list[str]:
    """``base_model.embedded_training`` merged over ``training`` (as the training pipeline
    merges it for the embedded default) must still be a valid ``training``."""
    overrides = params["base_model"]["embedded_training"]
    where = ("base_model", "embedded_training")
    try:
        merged = training_params_for({"path": None, "embedded_training": overrides},
                                     params["training"])
    except KeyError as error:  # an override of a key training does not have
        key = error.args[0].split(":")[0]
        return [f"{TRAINING_FILE}: {key}: unknown key (not a key of training)"]
    # training itself is valid here, so what fails in the merge is an override's value.
    return [line.replace(f"{TRAINING_FILE}: ", f"{TRAINING_FILE}: {'.'.join(where)}.", 1)
            for line in _problems(TRAINING_FILE, TrainingParameters, merged)]


def parameter_problems(params: Mapping[str, Any]) -> list[str]:
    """Every unknown, missing or mistyped key of the merged parameters, one line each:
    ``<file>: <dotted path>: <reason>``. Empty when all is well."""
    problems: list[str] = []
    declared: set[str] = set()
    for file, model in PARAMETER_FILES.items():
        keys = set(model.model_fields)
        declared |= keys
        problems += _problems(file, model, {k: v for k, v in params.items() if k in keys})
    problems += [f"parameters: {key}: unknown key (no parameters file declares it)"
                 for key in sorted(set(params) - declared)]
    if not any(p.startswith(f"{TRAINING_FILE}: ") for p in problems):
        problems += _embedded_training_problems(params)
    return problems


def validate_parameters(params: Mapping[str, Any]) -> None:
    """Raise :class:`ParametersError` listing every problem of :func:`parameter_problems`."""
    problems = parameter_problems(params)
    if problems:
        raise ParametersError(problems)


__all__ = ["PARAMETER_FILES", "ParametersError", "parameter_problems", "validate_parameters"]
