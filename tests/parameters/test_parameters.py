"""The typed parameters: conf/base validates, and each kind of mistake is named with its
key's dotted path and its file."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from so8t_kedro.hooks import ParameterValidationHooks
from so8t_kedro.parameters import (
    PARAMETER_FILES,
    ParametersError,
    parameter_problems,
    validate_parameters,
)
from tests.helpers.project import CONF, base_parameters


def test_conf_base_validates():
    assert parameter_problems(base_parameters()) == []


def test_every_parameters_file_has_a_model_naming_its_top_level_keys():
    """conf/base's files declare their keys; an environment's file declares the keys that
    only it has (the others override conf/base's)."""
    import yaml

    def keys(path: Path) -> set[str]:
        return set(yaml.safe_load(path.read_text(encoding="utf-8")))

    base = {path.name: keys(path) for path in (CONF / "base").glob("parameters*.yml")}
    envs = {path.name: keys(path) - set().union(*base.values())
            for path in CONF.glob("*/parameters*.yml") if path.parent.name != "base"}
    envs = {name: own for name, own in envs.items() if own}
    assert sorted(PARAMETER_FILES) == sorted({**base, **envs})
    for name, own in {**base, **envs}.items():
        assert own == set(PARAMETER_FILES[name].model_fields), name


def test_the_rehearsal_environment_validates():
    from kedro.config import OmegaConfigLoader

    from so8t_kedro.settings import CONFIG_LOADER_ARGS

    params = OmegaConfigLoader(conf_source=str(CONF), env="rehearsal",
                               **CONFIG_LOADER_ARGS)["parameters"]
    assert "rehearsal" in params
    assert parameter_problems(params) == []


def test_an_unknown_key_is_named_with_its_file():
    params = base_parameters()
    params["training"]["lora"]["alfa"] = 128

    assert parameter_problems(params) == [
        "parameters_training.yml: training.lora.alfa: unknown key"]


def test_a_value_the_so8t_library_refuses_fails_at_the_start():
    """training.so8t is checked by the library's own SO8TConfig too: a wrong init is an
    error of the run's start, not of the gates' installation minutes later."""
    params = base_parameters()
    params["training"]["so8t"]["init"] = "nromal"

    [problem] = parameter_problems(params)
    assert problem.startswith("parameters_training.yml: training.so8t: ")
    assert "init must be one of ('normal', 'zeros'), got 'nromal'" in problem


def test_a_missing_key_is_named_with_its_file():
    params = base_parameters()
    del params["data_processing"]["split"]["random_state"]

    assert parameter_problems(params) == [
        "parameters_data_processing.yml: data_processing.split.random_state: missing key"]


@pytest.mark.parametrize(("section", "path", "value"), [
    ("training", ["epochs"], "2"),                   # a string is no int
    ("export", ["bake", "tolerance"], "1e-3"),       # nor a float
    ("thinking_sft", ["validate_round_trip"], 1),    # an int is no bool
    ("scoring", ["quantization"], "8-bit"),          # not a choice
])
def test_a_mistyped_value_is_named_with_its_file(section, path, value):
    params = base_parameters()
    block = params[section]
    for key in path[:-1]:
        block = block[key]
    block[path[-1]] = value

    [problem] = parameter_problems(params)
    file = "parameters_evaluation.yml" if section == "scoring" else f"parameters_{section}.yml"
    assert problem.startswith(f"{file}: {'.'.join([section, *path])}: ")
    assert repr(value) in problem


def test_an_int_is_a_float_and_null_where_the_yaml_allows_it():
    params = base_parameters()
    params["training"]["learning_rate"] = 1
    params["export"]["bake"]["dtype"] = None

    assert parameter_problems(params) == []


def test_a_key_no_file_declares_is_unknown():
    params = base_parameters()
    params["trainig"] = {"epochs": 1}

    assert parameter_problems(params) == [
        "parameters: trainig: unknown key (no parameters file declares it)"]


def test_the_embedded_training_overrides_are_checked_as_training_keys():
    params = base_parameters()
    params["base_model"]["embedded_training"]["lora"]["alfa"] = 1
    [problem] = parameter_problems(params)
    assert problem.startswith(
        "parameters_training.yml: base_model.embedded_training.lora.alfa: unknown key")

    params = base_parameters()
    params["base_model"]["embedded_training"]["epochs"] = "six"
    [problem] = parameter_problems(params)
    assert problem.startswith("parameters_training.yml: base_model.embedded_training.epochs: ")


def test_optional_keys_stay_optional():
    params = base_parameters()
    del params["serve"]["reply_policy"]            # every switch takes its safe value
    params["training"]["max_steps"] = 10           # the HPO trials' cap

    assert parameter_problems(params) == []


def test_every_problem_is_listed_in_one_error():
    params = base_parameters()
    params["training"]["lora"]["alfa"] = 1
    del params["ab_test"]["ece_bins"]

    with pytest.raises(ParametersError) as caught:
        validate_parameters(params)

    message = str(caught.value)
    assert "parameters_training.yml: training.lora.alfa: unknown key" in message
    assert "parameters_ab_test.yml: ab_test.ece_bins: missing key" in message


def test_the_hook_fails_a_run_with_a_typo_at_its_start():
    params = base_parameters()
    params["training"]["lora"]["alfa"] = 1

    with pytest.raises(ParametersError, match=r"parameters_training\.yml: training\.lora\.alfa"):
        ParameterValidationHooks().after_context_created(SimpleNamespace(params=params))
    ParameterValidationHooks().after_context_created(SimpleNamespace(params=base_parameters()))


def test_a_session_with_a_typo_in_its_params_fails_before_any_node(kedro_project: Path):
    """``kedro run --params=training.lora.alfa=1``, as a session sees it (runtime params
    merged over conf/base)."""
    from kedro.framework.session import KedroSession

    typo = {"training": {"lora": {"alfa": 1}}}
    with (KedroSession.create(project_path=kedro_project, runtime_params=typo) as session,
          pytest.raises(ParametersError, match=r"training\.lora\.alfa: unknown key")):
        session.load_context()
    # A valid override (a value of the right type) starts as before.
    with KedroSession.create(project_path=kedro_project,
                             runtime_params={"training": {"lora": {"alpha": 8}}}) as session:
        assert session.load_context().params["training"]["lora"]["alpha"] == 8
