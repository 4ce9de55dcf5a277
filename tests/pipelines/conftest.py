"""Fixtures of the pipeline tests that score models: a tiny adapter on the tiny base."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from so8t_kedro.so8t import save_adapter
from so8t_kedro.training.base_model import load_base_model
from so8t_kedro.training.loop import add_adapters


@pytest.fixture(scope="session")
def tiny_adapter_dir(tiny_base_dir, training_params_session, tmp_path_factory) -> Path:
    """LoRA + SO8T gates on the tiny base, randomly initialised (B non-zero so that the
    adapter changes the logits): what the scoring code loads, without a training run."""
    import torch

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
