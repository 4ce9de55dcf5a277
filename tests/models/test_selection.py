"""Tests of so8t_kedro.models.selection: which base, which adapter, which training
parameters."""

from __future__ import annotations

import json

import pytest

from so8t_kedro.models.selection import (
    ModelReference,
    resolve_catalog_adapter,
    resolve_model,
    resolve_model_dirs,
    training_params_for,
)


def test_model_specs_resolve_to_directories(tmp_path):
    base = tmp_path / "embedded_base_model/v1/embedded_base_model"
    latest = tmp_path / "so8t_adapter/2026-11-22T10.00.00.000Z/so8t_adapter"
    older = tmp_path / "so8t_adapter/2026-11-21T09.00.00.000Z/so8t_adapter"
    for directory in (base, latest, older):
        directory.mkdir(parents=True)

    def resolve(adapter, base_model_path=None):
        return resolve_model_dirs(base, latest, {"path": base_model_path},
                                  {"name": "m", "adapter": adapter})

    assert resolve(None) == (base, None)
    assert resolve("catalog") == (base, latest)
    assert resolve("2026-11-21T09.00.00.000Z") == (base, older)
    assert resolve(str(older)) == (base, older)
    # base_model.path (a real model) wins over the embedded default
    assert resolve(None, base_model_path=str(tmp_path)) == (tmp_path, None)
    with pytest.raises(FileNotFoundError, match="no version '2020-01-01T00.00.00.000Z'"):
        resolve("2020-01-01T00.00.00.000Z")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve(str(tmp_path / "x"))


def test_an_adapter_is_scored_on_the_base_it_was_trained_on(tmp_path):
    latest_base = tmp_path / "embedded_base_model/v2/embedded_base_model"
    trained_on = tmp_path / "embedded_base_model/v1/embedded_base_model"
    adapter = tmp_path / "so8t_adapter/v1/so8t_adapter"
    for directory in (latest_base, trained_on, adapter):
        directory.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": str(trained_on)}))
    spec = {"name": "so8t", "adapter": "catalog"}
    assert resolve_model_dirs(latest_base, adapter, {"path": None}, spec) == (trained_on, adapter)
    # the recorded base is gone (another machine, a cleaned folder): the catalog's base
    trained_on.rmdir()
    assert resolve_model_dirs(latest_base, adapter, {"path": None}, spec) == (latest_base,
                                                                              adapter)


def test_a_model_spec_resolves_once_into_a_model_reference(tmp_path):
    base = tmp_path / "embedded_base_model/v1/embedded_base_model"
    adapter = tmp_path / "so8t_adapter/v1/so8t_adapter"
    for directory in (base, adapter):
        directory.mkdir(parents=True)
    resolved = resolve_model(base, adapter, {"path": None}, {"name": "so8t", "adapter": "catalog"})
    assert resolved == ModelReference(name="so8t", base_dir=base, adapter_dir=adapter)
    assert resolved.kind == "language_model"
    assert resolve_catalog_adapter(base, adapter, {"path": None}) == resolved
    assert resolve_model(base, adapter, {"path": None},
                         {"name": "original", "kind": "language_model", "adapter": None}
                         ) == ModelReference(name="original", base_dir=base)
    # the reference classifier: nothing to resolve, its adapter is ignored
    assert resolve_model(base, adapter, {"path": None},
                         {"name": "ref", "kind": "reference_classifier", "adapter": "x/y"}
                         ) == ModelReference(name="ref", base_dir=None,
                                             kind="reference_classifier")
    with pytest.raises(ValueError, match="kind must be one of language_model, "
                                         "reference_classifier, got 'tfidf'"):
        resolve_model(base, adapter, {"path": None}, {"name": "x", "kind": "tfidf"})
    with pytest.raises(ValueError, match="needs a base directory"):
        ModelReference(name="so8t", base_dir=None)
    with pytest.raises(AttributeError):  # frozen: what a node received stays what was resolved
        resolved.adapter_dir = None


def test_the_embedded_default_trains_with_its_own_recipe():
    training = {"quantization": "8bit", "learning_rate": 2e-3, "epochs": 2,
                "lora": {"r": 64, "modules_to_save": None},
                "loss_weights": {"cmd": 0.9, "safety": 0.1, "orthogonal_reg": 0.01}}
    recipe = {"quantization": None, "epochs": 4, "lora": {"modules_to_save": ["lm_head"]},
              "loss_weights": {"safety": 1.0}}
    embedded = training_params_for({"path": None, "embedded_training": recipe}, training)
    assert embedded == {"quantization": None, "learning_rate": 2e-3, "epochs": 4,
                        "lora": {"r": 64, "modules_to_save": ["lm_head"]},
                        "loss_weights": {"cmd": 0.9, "safety": 1.0, "orthogonal_reg": 0.01}}
    assert training["quantization"] == "8bit"  # the caller's dict is not changed
    # A real model (Borea) keeps params:training, QLoRA included.
    real = training_params_for({"path": "D:/models/Borea", "embedded_training": recipe}, training)
    assert real == training
    with pytest.raises(KeyError, match=r"embedded_training\.lora\.rank"):
        training_params_for({"path": None, "embedded_training": {"lora": {"rank": 8}}}, training)
