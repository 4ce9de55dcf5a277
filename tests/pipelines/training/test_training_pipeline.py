"""The training pipeline's nodes on a DataCatalog: embedded base -> adapter -> curve."""

from __future__ import annotations

from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from matplotlib.figure import Figure
from peft import PeftModel
from transformers import AutoModelForCausalLM

from so8t_kedro.datasets import HFDirectoryDataset
from so8t_kedro.pipelines.training import create_pipeline
from so8t_kedro.so8t import list_gates, load_gates
from tests.catalog_helpers import PersistedMemoryDataset


def test_training_pipeline_slice(sft_samples, training_params, tmp_path):
    embedded = {"vocab_size": 1200, "hidden_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 128,
                "max_position_embeddings": 1024, "seed": 0,
                "pretrain": {"epochs": 2, "learning_rate": 3e-3, "batch_size": 8}}
    training_params["epochs"] = 1
    catalog = DataCatalog(datasets={
        "thinking_sft_dataset": MemoryDataset(sft_samples),
        "params:base_model.embedded": MemoryDataset(embedded),
        "params:base_model": MemoryDataset({"path": None, "embedded": embedded}),
        "params:training": MemoryDataset(training_params),
        "embedded_base_model": HFDirectoryDataset(filepath=str(tmp_path / "base")),
        "so8t_adapter": HFDirectoryDataset(filepath=str(tmp_path / "adapter")),
        "training_history": PersistedMemoryDataset(),
        "training_summary": PersistedMemoryDataset(),
        "learning_curve_plot": PersistedMemoryDataset(),
    })
    SequentialRunner().run(create_pipeline(), catalog)

    history = catalog.load("training_history")
    summary = catalog.load("training_summary")
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


def test_an_interrupted_run_exits_with_the_signal_code(monkeypatch, tmp_path):
    import signal

    import pytest

    from so8t_kedro.pipelines.training import nodes
    from so8t_kedro.training.checkpoint import TrainingInterrupted

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted(tmp_path / "checkpoint_emergency_x", "SIGTERM", signal.SIGTERM)

    monkeypatch.setattr(nodes, "train_so8t", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        nodes.train_so8t_adapter(tmp_path, None, {"path": None},
                                 {"checkpoint": {"dir": str(tmp_path)}})
    assert exit_info.value.code == 128 + signal.SIGTERM


def test_learning_curve_of_a_run_without_steps():
    import pandas as pd

    from so8t_kedro.pipelines.training.nodes import plot_learning_curve
    from so8t_kedro.training.loop import HISTORY_COLUMNS

    figure = plot_learning_curve(pd.DataFrame(columns=list(HISTORY_COLUMNS)))
    assert "no optimiser steps" in figure.axes[0].get_title()
