"""Shared test fixtures: a bootstrapped project copy, a tiny base model + SFT set, and a
tiny adapter on that base."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

# Before anything imports kedro: no telemetry prompt or upload from tests.
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

from so8t_kedro.labels import LABEL_TO_ID  # after the telemetry switch
from so8t_kedro.models.embedded import embedded_base_model
from so8t_kedro.models.loading import load_base_model, save_base_model
from so8t_kedro.pipelines.thinking_sft.nodes import render_thinking_sft_samples
from so8t_kedro.so8t import save_adapter
from so8t_kedro.think import request_from_prompt
from so8t_kedro.training.pretrain import pretrain_causal_lm
from tests.helpers.embedded_base import embedded_params
from tests.helpers.phrase_bank import PHRASE_BANK_DATA, THINKING_SFT_PARAMS
from tests.helpers.project import seed_records

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def project_root() -> Path:
    """The repository root (pyproject.toml, conf/, data/)."""
    return PROJECT_ROOT


@pytest.fixture
def kedro_project(project_root: Path, tmp_path: Path, monkeypatch) -> Path:
    """A bootstrapped copy of the project under tmp_path (conf, pyproject, shipped seed data),
    MLflow tracking off.

    Runs write their outputs under the copy's data/, never into the repository.
    """
    import shutil
    import sys

    from kedro.framework.startup import bootstrap_project

    shutil.copytree(
        project_root / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local")
    )
    (tmp_path / "conf/local").mkdir()
    # Untracked, as a machine that turns MLflow off runs (tests/tracking turns it on): a
    # tracked run opens a SQLite store, seconds per run for the suite's many runs.
    (tmp_path / "conf/local/parameters_tracking.yml").write_text("tracking: {enabled: false}\n")
    shutil.copy(project_root / "pyproject.toml", tmp_path)
    shutil.copy(project_root / ".telemetry", tmp_path)
    (tmp_path / "src").mkdir()  # bootstrap_project wants the source dir to exist
    raw = tmp_path / "data/01_raw"
    (raw / "four_class").mkdir(parents=True)
    shutil.copy(project_root / "data/01_raw/so8t_seed_dataset.jsonl", raw)

    # bootstrap_project edits sys.path and PYTHONPATH; give both back afterwards.
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    bootstrap_project(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def sft_samples() -> pd.DataFrame:
    """24 train + 8 val /think samples, balanced over the labels."""
    records = pd.DataFrame([
        {**r, "label_id": LABEL_TO_ID[r["label"]], "source": "seed",
         "split": "val" if i % 8 >= 6 else "train"}
        for i, r in enumerate(seed_records(8))
    ])
    return render_thinking_sft_samples(records, PHRASE_BANK_DATA,
                                       {**THINKING_SFT_PARAMS, "format": "quadruple", "seed": 0})


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory, sft_samples) -> Path:
    model, tokenizer = embedded_base_model(
        sft_samples["text"].tolist(),
        embedded_params(vocab_size=1200, hidden_size=64, intermediate_size=128,
                        placeholder_tokens=[]),
    )
    pretrain_causal_lm(model, tokenizer, [request_from_prompt(p) for p in sft_samples["prompt"]],
                       epochs=5, learning_rate=3e-3, batch_size=8, seed=0)
    out = tmp_path_factory.mktemp("tiny_base") / "model"
    save_base_model(model, tokenizer, out)
    return out


@pytest.fixture
def training_params(tmp_path) -> dict:
    """The project's training parameters, shrunk to a few CPU steps."""
    params = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_training.yml").read_text())
    params = params["training"]  # a fresh copy: the file is read for each test
    params.update(quantization=None, epochs=2, batch_size=4, gradient_accumulation_steps=1,
                  max_seq_length=512, learning_rate=5e-3)
    params["lora"].update(r=4, alpha=8)
    params["checkpoint"]["dir"] = str(tmp_path / "checkpoints")
    params["progress"]["show_progress_bar"] = False
    return params


@pytest.fixture(scope="session")
def tiny_adapter_dir(tiny_base_dir, training_params_session, tmp_path_factory) -> Path:
    """LoRA + SO8T gates on the tiny base, randomly initialised (B non-zero so that the
    adapter changes the logits): what the scoring code loads, without a training run."""
    import torch

    from so8t_kedro.training.loop import add_adapters  # peft and accelerate: only when used

    model, tokenizer = load_base_model(tiny_base_dir)
    model = add_adapters(model, training_params_session)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)
    out = tmp_path_factory.mktemp("adapter") / "so8t_adapter"
    save_adapter(model, out)
    tokenizer.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def training_params_session(project_root) -> dict:
    params = yaml.safe_load((project_root / "conf/base/parameters_training.yml").read_text())
    params = params["training"]
    params.update(quantization=None)
    params["lora"].update(r=4, alpha=8)
    return params
