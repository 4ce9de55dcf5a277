"""Fixtures for the SO8T library tests: a tiny, seeded, float32 Phi-3 built from a config."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

import pytest
import torch
from transformers import Phi3Config, Phi3ForCausalLM

VOCAB = 128
HIDDEN = 64
LORA_TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]


def make_config(num_layers: int = 3, hidden: int = HIDDEN) -> Phi3Config:
    return Phi3Config(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )


def make_model(seed: int = 0, num_layers: int = 3, hidden: int = HIDDEN) -> Phi3ForCausalLM:
    torch.manual_seed(seed)
    return Phi3ForCausalLM(make_config(num_layers, hidden)).eval()


def randomize_lora(model: torch.nn.Module, std: float = 0.05, seed: int = 1) -> None:
    """LoRA B starts at zero (a no-op adapter); fill every LoRA weight with random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * std)


def randomize_gates(model: torch.nn.Module, scale: float, seed: int = 2) -> None:
    from so8t_kedro.so8t import list_gates

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in list_gates(model).values():
            gate.theta.copy_(torch.randn(gate.theta.shape, generator=gen) * scale)


def lora_config(r: int = 4):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=list(LORA_TARGETS))


@pytest.fixture
def make_phi3():
    """Factory: ``make_phi3(seed=0, num_layers=3, hidden=64)`` -> a fresh tiny Phi-3."""
    return make_model


@pytest.fixture
def fill_lora():
    """``fill_lora(model, std=0.05, seed=1)``: random values in every LoRA A and B."""
    return randomize_lora


@pytest.fixture
def fill_gates():
    """``fill_gates(model, scale, seed=2)``: θ ~ N(0, scale²) in every installed gate."""
    return randomize_gates


@pytest.fixture
def make_lora_config():
    """Factory: ``make_lora_config(r=4)`` -> LoraConfig on qkv/o/gate_up/down projections."""
    return lora_config


@pytest.fixture
def tiny_phi3() -> Phi3ForCausalLM:
    """A fresh 3-layer, hidden-64, 4-head, vocab-128 Phi-3 in float32 (seeded)."""
    return make_model()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) for 2 sequences of 12 tokens, the second left-padded by 3."""
    gen = torch.Generator().manual_seed(123)
    input_ids = torch.randint(3, VOCAB, (2, 12), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :3] = 0
    input_ids[1, :3] = 0
    return input_ids, attention_mask


@pytest.fixture(scope="session")
def tiny_phi3_dir(tmp_path_factory) -> str:
    """The seeded tiny Phi-3 saved with ``save_pretrained`` (like a real local checkpoint)."""
    path = tmp_path_factory.mktemp("tiny_phi3")
    make_model().save_pretrained(str(path))
    return str(path)
