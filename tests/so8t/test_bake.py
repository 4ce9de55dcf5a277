"""Baking: W′ = Rᵀ·W folded into o_proj, LoRA merged, a stock Phi3ForCausalLM out."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import get_peft_model
from safetensors import safe_open
from transformers import AutoModelForCausalLM, Phi3ForCausalLM

from so8t_kedro.so8t import (
    SO8TConfig,
    assert_stock,
    bake,
    bake_from_adapter,
    decoder_layers,
    fold_rotation_into_linear,
    install_gates,
    list_gates,
    remove_gates,
    save_adapter,
    save_baked,
    verify_bake,
)
from tests.helpers.tolerances import accumulation_bound, forward_bound


def tol(model, batch) -> float:
    """The float32 bound for a baked vs gated comparison of ``model`` on ``batch``: the
    fold only regroups sums (see forward_bound); measured here about 1e-6."""
    return forward_bound(torch.float32, model.config, _logits(model, batch))


@pytest.fixture
def gated_lora_model(make_phi3, make_lora_config, fill_lora, fill_gates):
    """Factory: tiny Phi-3 + random LoRA + gates with θ ~ N(0, 0.3²) on ``layer_indices``."""

    def build(layer_indices=None, parametrization="exp", seed=0):
        model = get_peft_model(make_phi3(seed=seed), make_lora_config())
        install_gates(
            model, SO8TConfig(layer_indices=layer_indices, parametrization=parametrization)
        )
        fill_lora(model, std=0.05)
        fill_gates(model, scale=0.3)
        return model.eval()

    return build


def _logits(model, batch):
    input_ids, attention_mask = batch
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask).logits


def _stock_keys(model) -> set[str]:
    return set(Phi3ForCausalLM(model.config).state_dict())


def test_fold_formula_on_a_linear_with_bias():
    gen = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(24, 16, bias=True)
    theta = torch.randn(2, 8, 8, generator=gen) * 0.5
    rot = torch.linalg.matrix_exp(theta - theta.transpose(-1, -2))
    x = torch.randn(5, 24, generator=gen)
    expected = linear(x) @ torch.block_diag(*rot)
    folded = copy.deepcopy(linear)
    fold_rotation_into_linear(folded, rot)
    # Each output is a 24-term dot product (+ bias) on one side and that followed by an
    # 8-term one with R on the other: within γ_(24+1+8) of the terms' absolute sum.
    magnitude = (x.abs() @ linear.weight.abs().T + linear.bias.abs()).max().item()
    tol = 2 * accumulation_bound(torch.float32, 24 + 1 + 8, 8 * magnitude)
    assert torch.allclose(folded(x), expected, rtol=0, atol=tol)
    # W′ = W·R (the original notes) is not even shape-compatible in general, and for a square
    # weight it computes something else:
    square = torch.nn.Linear(16, 16, bias=False)
    wrong = copy.deepcopy(square)
    with torch.no_grad():
        wrong.weight.copy_(square.weight @ torch.block_diag(*rot))
    x16 = torch.randn(5, 16, generator=gen)
    assert not torch.allclose(wrong(x16), square(x16) @ torch.block_diag(*rot), atol=1e-2)
    with pytest.raises(TypeError):
        fold_rotation_into_linear(torch.nn.Identity(), rot)
    with pytest.raises(ValueError):
        fold_rotation_into_linear(torch.nn.Linear(8, 8), rot)


@pytest.mark.parametrize("layer_indices", [None, [0], [1, 2]])
def test_bake_matches_gated_lora_model(gated_lora_model, batch, layer_indices):
    model = gated_lora_model(layer_indices)
    gated = _logits(model, batch)
    baked = bake(model)
    assert type(baked) is Phi3ForCausalLM
    assert_stock(baked)
    report = verify_bake(model, baked, *batch)
    assert report["n_tokens"] == int(batch[1].sum())
    assert report["max_abs_logit_diff"] <= tol(model, batch)
    assert report["top1_agreement"] == 1.0
    assert torch.allclose(_logits(baked, batch), gated, atol=tol(model, batch), rtol=0)
    # the input model was not modified (inplace=False)
    assert list(list_gates(model)) == ([0, 1, 2] if layer_indices is None else layer_indices)
    assert torch.equal(_logits(model, batch), gated)


def test_gates_and_lora_change_the_logits(gated_lora_model, make_phi3, batch):
    """Guards the bake tests: with θ and LoRA B random, the gated model is far from the base."""
    model = gated_lora_model(None)
    base = _logits(make_phi3(seed=0), batch)
    assert (_logits(model, batch) - base).abs().max() > 100 * tol(model, batch)


def test_wrong_fold_formula_fails_the_tolerance(gated_lora_model, batch):
    model = gated_lora_model([0, 2])
    wrong = copy.deepcopy(model).merge_and_unload()
    layers = decoder_layers(wrong)
    with torch.no_grad():
        for i, gate in list_gates(wrong).items():
            o_proj = layers[i].self_attn.o_proj
            o_proj.weight.copy_(o_proj.weight @ gate.block_diagonal())  # W′ = W·R: wrong
    remove_gates(wrong)
    report = verify_bake(model, wrong, *batch)
    assert report["max_abs_logit_diff"] > 100 * tol(model, batch)


@pytest.mark.parametrize("parametrization", ["cayley", "taylor"])
def test_bake_other_parametrizations(gated_lora_model, batch, parametrization):
    model = gated_lora_model([0, 1], parametrization=parametrization)
    report = verify_bake(model, bake(model), *batch)
    assert report["max_abs_logit_diff"] <= tol(model, batch)


def test_bake_gates_only_model_and_dtype(make_phi3, fill_gates, batch):
    model = make_phi3()
    install_gates(model, SO8TConfig(layer_indices=[1]))
    fill_gates(model, scale=0.3)
    assert verify_bake(model, bake(model), *batch)["max_abs_logit_diff"] <= tol(model, batch)
    baked16 = bake(model, "bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in baked16.parameters())
    report = verify_bake(model, baked16, *batch)
    assert report["top1_agreement"] >= 0.9 and report["max_abs_logit_diff"] < 0.1
    inplace = bake(model, inplace=True)
    assert inplace is model and list_gates(model) == {}


def test_baked_directory_is_a_stock_phi3(gated_lora_model, batch, tmp_path):
    model = gated_lora_model(None)
    baked = bake(model)
    out = save_baked(baked, None, tmp_path / "baked")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Phi3ForCausalLM"]
    assert "quantization_config" not in config and "auto_map" not in config
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        file_keys = set(f.keys())
    assert file_keys == _stock_keys(baked)
    reloaded = AutoModelForCausalLM.from_pretrained(str(out))
    assert type(reloaded) is Phi3ForCausalLM
    assert set(reloaded.state_dict()) == _stock_keys(baked)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in reloaded.modules())
    assert verify_bake(model, reloaded, *batch)["max_abs_logit_diff"] <= tol(model, batch)


def test_save_baked_refuses_a_gated_model(make_phi3, tmp_path):
    model = make_phi3()
    install_gates(model)
    with pytest.raises(ValueError, match="SO8T gate"):
        save_baked(model, None, tmp_path)


def test_bake_from_adapter(gated_lora_model, make_phi3, batch, tmp_path, tiny_phi3_dir):
    model = gated_lora_model([0, 2], seed=0)  # same seed as the saved base
    save_adapter(model, tmp_path / "adapter")
    baked = bake_from_adapter(tiny_phi3_dir, tmp_path / "adapter")
    assert type(baked) is Phi3ForCausalLM and baked.dtype == torch.float32
    assert verify_bake(model, baked, *batch)["max_abs_logit_diff"] <= tol(model, batch)
    baked16 = bake_from_adapter(tiny_phi3_dir, tmp_path / "adapter", dtype=torch.bfloat16)
    assert baked16.dtype == torch.bfloat16
    assert verify_bake(model, baked16, *batch)["top1_agreement"] >= 0.9
    with pytest.raises(FileNotFoundError):
        bake_from_adapter(tiny_phi3_dir, tmp_path)


def test_bake_bf16_model_merges_in_fp32_and_keeps_bf16(gated_lora_model, batch):
    model = gated_lora_model([0, 2]).to(torch.bfloat16)
    baked = bake(model)
    assert baked.dtype == torch.bfloat16
    exact = bake(copy.deepcopy(model).to(torch.float32))  # same weights, all fp32
    one_pass = bake(model, work_dtype=None)  # merge + fold written back in bf16 step by step
    assert one_pass.dtype == torch.bfloat16

    def error(m):
        return sum(
            (p.float() - exact.state_dict()[k]).abs().sum().item()
            for k, p in m.state_dict().items()
        )

    assert error(baked) <= error(one_pass)
    assert verify_bake(model, baked, *batch)["top1_agreement"] >= 0.9
