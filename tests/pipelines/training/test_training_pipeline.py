"""The training pipeline's nodes on a DataCatalog: embedded base -> (search) -> adapter ->
curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from matplotlib.figure import Figure
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from so8t_kedro.datasets import HFDirectoryDataset, OptunaStorageDataset
from so8t_kedro.pipelines.training import create_pipeline
from so8t_kedro.pipelines.training.nodes import (
    attach_reference_scores,
    build_embedded_base_model,
)
from so8t_kedro.so8t import list_gates, load_gates
from tests.helpers.catalog import PersistedMemoryDataset, project_catalog_entry
from tests.helpers.embedded_base import embedded_params
from tests.helpers.sft import train_records

PROJECT_ROOT = Path(__file__).resolve().parents[3]
EMBEDDED = embedded_params(vocab_size=1200, hidden_size=64, intermediate_size=128,
                           placeholder_tokens=[],
                           pretrain={"epochs": 2, "learning_rate": 3e-3, "batch_size": 8})
# The embedded default's own recipe, merged over params:training: its output head and the
# attention's fused projection trained in full (the queries started at zero), and the
# reference classifier distilled.
EMBEDDED_TRAINING = {"uniform_attention_start": True,
                     "lora": {"target_modules": ["o_proj", "gate_up_proj", "down_proj"],
                              "modules_to_save": ["lm_head", "qkv_proj"]},
                     "loss_weights": {"distill": 0.5}}
PERSISTED_OUTPUTS = ("hpo_best_params", "hpo_trials", "hpo_optimization_history_plot",
                     "hpo_param_importances_plot", "training_history", "training_summary",
                     "learning_curve_plot")


def reference_params() -> dict:
    """The project's params:evaluation.reference_classifier (a fresh copy per call)."""
    evaluation = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_evaluation.yml").read_text())
    return evaluation["evaluation"]["reference_classifier"]


def pipeline_catalog(sft_samples, training_params, hpo_params, tmp_path) -> DataCatalog:
    return DataCatalog(datasets={
        "thinking_sft_dataset": MemoryDataset(sft_samples),
        "train_records": MemoryDataset(train_records(sft_samples)),
        "params:evaluation.reference_classifier": MemoryDataset(reference_params()),
        "params:training.distillation": MemoryDataset(training_params["distillation"]),
        "params:base_model.embedded": MemoryDataset(EMBEDDED),
        "params:base_model": MemoryDataset({"path": None, "embedded": EMBEDDED,
                                            "embedded_training": EMBEDDED_TRAINING}),
        "params:training": MemoryDataset(training_params),
        "params:hpo": MemoryDataset(hpo_params),
        "hpo_study_storage": OptunaStorageDataset(filepath=str(tmp_path / "hpo" / "study.db")),
        "embedded_base_model": HFDirectoryDataset(filepath=str(tmp_path / "base")),
        "so8t_adapter": HFDirectoryDataset(filepath=str(tmp_path / "adapter")),
        **{name: PersistedMemoryDataset() for name in PERSISTED_OUTPUTS},
    })


@pytest.fixture
def hpo_params() -> dict:
    params = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_training.yml").read_text())
    return params["hpo"]


def test_training_pipeline_slice(sft_samples, training_params, hpo_params, tmp_path):
    training_params["epochs"] = 1
    catalog = pipeline_catalog(sft_samples, training_params, hpo_params, tmp_path)
    SequentialRunner().run(create_pipeline(), catalog)

    # The search is off by default: no overrides, no study.
    assert catalog.load("hpo_best_params") == {}
    assert catalog.load("hpo_trials").empty
    assert not (tmp_path / "hpo" / "study.db").exists()
    history = catalog.load("training_history")
    summary = catalog.load("training_summary")
    assert summary["hpo_overrides"] == {}
    assert len(history) == summary["optimizer_steps"] == 6
    assert summary["val_lm_loss_trained"] < summary["val_lm_loss_untrained"]
    assert isinstance(catalog.load("learning_curve_plot"), Figure)

    base_dir, adapter_dir = catalog.load("embedded_base_model"), catalog.load("so8t_adapter")
    assert (base_dir / "tokenizer.model").exists()
    assert (adapter_dir / "so8t_gates.safetensors").exists()
    restored = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir),
                                         adapter_dir)
    load_gates(restored, adapter_dir)
    assert sorted(list_gates(restored)) == [0, 1]
    # base_model.embedded_training applied: the head was trained in full and saved with LoRA;
    # so was the fused qkv projection, whose query rows started at zero (64 of its rows:
    # hidden size 64) and moved off it, while its key and value rows started from the base.
    saved = load_file(adapter_dir / "adapter_model.safetensors")
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    [head] = [v for k, v in saved.items() if "lm_head" in k]
    assert not torch.equal(head, base.lm_head.weight)
    qkv = [v for k, v in sorted(saved.items()) if "qkv_proj" in k]
    assert len(qkv) == 2 and all(w.shape == (3 * 64, 64) for w in qkv)
    for trained, layer in zip(qkv, base.model.layers, strict=True):
        queries = trained[:64].abs().max()
        assert 0 < queries < 0.5 * layer.self_attn.qkv_proj.weight[:64].abs().max()
    # the distillation term was on: every step has one
    assert (history["distill"] > 0).all()


def test_the_embedded_base_sees_the_train_split_only(sft_samples):
    """The tokenizer is trained on train rows only: a string repeated in the val rows
    alone (their texts and requests) never becomes a piece. (Pre-training reads the
    requests of the same train rows.)"""
    marker = "ZQXJWV"
    samples = sft_samples.copy()
    val = samples["split"] == "val"
    samples.loc[val, "text"] = samples.loc[val, "text"] + f" {marker}" * 50
    samples.loc[val, "prompt"] = samples.loc[val, "prompt"].str.replace(
        "<|end|>\n<|assistant|>", f"{marker * 20}<|end|>\n<|assistant|>", regex=False)
    assert samples.loc[val, "prompt"].str.contains(marker).all()
    params = embedded_params(vocab_size=1200, hidden_size=64, intermediate_size=96,
                             placeholder_tokens=[],
                             pretrain={"epochs": 1, "learning_rate": 3e-3, "batch_size": 8})
    tokenizer = build_embedded_base_model(samples, params).tokenizer
    assert not any("ZQ" in piece or "XJ" in piece for piece in tokenizer.get_vocab())


def test_train_samples_get_cross_fitted_reference_scores(sft_samples, training_params):
    reference = reference_params()
    records = train_records(sft_samples)
    samples = attach_reference_scores(sft_samples, records, reference, {"folds": 3})
    train = samples["split"] == "train"
    assert samples.drop(columns="reference_scores").equals(sft_samples)
    assert samples.loc[~train, "reference_scores"].isna().all()
    scores = np.array(samples.loc[train, "reference_scores"].tolist())
    assert scores.shape == (int(train.sum()), 4) and np.isfinite(scores).all()

    with pytest.raises(ValueError, match=r"2 train sample\(s\) have no request in train_records"):
        attach_reference_scores(sft_samples, records.iloc[2:], reference, {"folds": 3})


def test_training_samples_persist_exactly(sft_samples, tmp_path):
    """The samples and their scores go through the project's catalog entry unchanged to the
    last bit, so that `kedro run --nodes=train_so8t_adapter` (or tune_hyperparameters)
    trains alone on what the run trained on."""
    samples = attach_reference_scores(sft_samples, train_records(sft_samples),
                                      reference_params(), {"folds": 3})
    catalog = DataCatalog.from_config({"training_samples": project_catalog_entry(
        "training_samples", tmp_path / "training_samples.parquet")})
    catalog.save("training_samples", samples)

    loaded = catalog.load("training_samples")
    train = (samples["split"] == "train").to_numpy()
    assert loaded.drop(columns="reference_scores").equals(samples.drop(columns="reference_scores"))
    assert np.array_equal(np.array(loaded.loc[train, "reference_scores"].tolist()),
                          np.array(samples.loc[train, "reference_scores"].tolist()))
    assert loaded.loc[~train, "reference_scores"].isna().all()


def test_an_interrupted_run_exits_with_the_signal_code(monkeypatch, tmp_path):
    import signal

    import pytest

    from so8t_kedro.pipelines.training import nodes
    from so8t_kedro.training.checkpoint import TrainingInterrupted

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted(tmp_path / "checkpoint_emergency_x", "SIGTERM", signal.SIGTERM)

    monkeypatch.setattr(nodes, "train_so8t", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        nodes.train_so8t_adapter(tmp_path, None, {"path": None, "embedded_training": {}},
                                 {"checkpoint": {"dir": str(tmp_path)}}, {})
    assert exit_info.value.code == 128 + signal.SIGTERM


def test_learning_curve_of_a_run_without_steps():
    from so8t_kedro.pipelines.training.nodes import plot_learning_curve
    from so8t_kedro.training.loop import HISTORY_COLUMNS

    figure = plot_learning_curve(pd.DataFrame(columns=list(HISTORY_COLUMNS)))
    assert "no optimiser steps" in figure.axes[0].get_title()


def test_search_then_training_with_the_best_parameters(sft_samples, training_params,
                                                       hpo_params, tmp_path):
    """hpo -> train in one run: the train node trains with the best trial's parameters."""
    training_params["epochs"] = 1
    hpo_params.update(enabled=True, n_trials=3, n_startup_trials=3, steps_per_trial=2,
                      eval_every_steps=1)
    catalog = pipeline_catalog(sft_samples, training_params, hpo_params, tmp_path)
    SequentialRunner().run(create_pipeline(), catalog)

    study = optuna.load_study(study_name=hpo_params["study_name"],
                              storage=f"sqlite:///{tmp_path / 'hpo' / 'study.db'}")
    best = catalog.load("hpo_best_params")
    assert best == study.best_params and set(best) == set(hpo_params["search_space"])
    assert catalog.load("hpo_trials")["number"].tolist() == [0, 1, 2]
    summary = catalog.load("training_summary")
    assert summary["hpo_overrides"] == best
    history = catalog.load("training_history")
    # The PET schedule's largest phase is the best pet_lambda (λ of the last step).
    assert history["pet_lambda"].iloc[-1] == pytest.approx(best["pet_lambda"])
    for name in ("hpo_optimization_history_plot", "hpo_param_importances_plot"):
        figure = catalog.load(name)
        assert isinstance(figure, Figure) and figure.axes
