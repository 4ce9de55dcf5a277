"""The ``rehearsal`` environment (benchmarks/borea_rehearsal.py) builds Phi-3.5-mini's shapes."""

from __future__ import annotations

import math

import pytest
import torch
from kedro.config import OmegaConfigLoader
from transformers import Phi3Config, Phi3ForCausalLM

from so8t_kedro.settings import CONFIG_LOADER_ARGS
from tests.helpers.project import CONF

# Phi-3.5-mini-instruct: 3,821,079,552 parameters (32 layers, untied output head).
PHI35_MINI_PARAMETERS = 3_821_079_552


@pytest.fixture(scope="module")
def parameters() -> dict:
    return OmegaConfigLoader(conf_source=str(CONF), env="rehearsal",
                             **CONFIG_LOADER_ARGS)["parameters"]


def test_the_rehearsal_model_is_phi35_mini_with_fewer_layers(parameters):
    rehearsal = parameters["rehearsal"]
    config = Phi3Config(**rehearsal["phi3"])
    with torch.device("meta"):  # shapes only, no memory
        model = Phi3ForCausalLM(config)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert config.num_hidden_layers == 2
    assert shapes["model.embed_tokens.weight"] == shapes["lm_head.weight"] == (32064, 3072)
    assert shapes["model.layers.1.self_attn.qkv_proj.weight"] == (3 * 3072, 3072)
    assert shapes["model.layers.1.mlp.gate_up_proj.weight"] == (2 * 8192, 3072)
    assert shapes["model.layers.1.mlp.down_proj.weight"] == (3072, 8192)
    per_layer = sum(p.numel() for n, p in model.named_parameters()
                    if n.startswith("model.layers.0."))
    rest = sum(p.numel() for n, p in model.named_parameters()
               if not n.startswith("model.layers."))
    assert rest + rehearsal["borea_layers"] * per_layer == PHI35_MINI_PARAMETERS
    # LongRoPE as Phi-3.5's: one factor per rotary frequency (head 96 -> 48), 4k -> 128k.
    rope = config.rope_parameters
    assert rope["rope_type"] == "longrope" and rope["rope_theta"] == 10000.0
    assert len(rope["long_factor"]) == len(rope["short_factor"]) == 96 // 2
    assert (config.original_max_position_embeddings, config.max_position_embeddings) == (
        4096, 131072)
    assert model.model.rotary_emb.attention_scaling == pytest.approx(
        (1 + math.log(131072 / 4096) / math.log(4096)) ** 0.5)
    # The embedded tokenizer's ids fit under the padded vocabulary.
    assert rehearsal["tokenizer_vocab_size"] < config.vocab_size


def test_the_rehearsal_trains_with_boreas_recipe(parameters):
    training = parameters["training"]
    assert training["quantization"] == "8bit"
    assert training["gradient_checkpointing"] is True
    assert (training["lora"]["r"], training["lora"]["alpha"]) == (64, 128)
    assert training["batch_size"] == 1
    assert parameters["rehearsal"]["quantizations"] == ["8bit", "4bit"]
