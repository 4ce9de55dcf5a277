"""Installing gates into Phi-3 (bare and under PEFT), trainability, save/load."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel, get_peft_model

from so8t_kedro.so8t import (
    CONFIG_FILE,
    GATES_FILE,
    SO8RotationGate,
    SO8TConfig,
    gate_parameters,
    get_gate_state_dict,
    install_gates,
    list_gates,
    load_adapter,
    load_gates,
    mark_gates_trainable,
    remove_gates,
    save_adapter,
    save_gates,
)
from tests.helpers.tolerances import accumulation_bound


def _logits(model, batch):
    input_ids, attention_mask = batch
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask).logits


def test_install_list_remove(tiny_phi3, batch):
    before = _logits(tiny_phi3, batch)
    gates = install_gates(tiny_phi3, SO8TConfig(layer_indices=[0, 2], init_scale=0.3))
    assert [g.layer_idx for g in gates] == [0, 2]
    listed = list_gates(tiny_phi3)
    assert list(listed) == [0, 2] and all(isinstance(g, SO8RotationGate) for g in listed.values())
    assert listed[0] is tiny_phi3.model.layers[0].self_attn.so8t_gate
    assert {n for n, _ in tiny_phi3.named_parameters() if "so8t_gate" in n} == {
        "model.layers.0.self_attn.so8t_gate.theta",
        "model.layers.2.self_attn.so8t_gate.theta",
    }
    gated = _logits(tiny_phi3, batch)
    assert (gated - before).abs().max() > 1e-3  # the hook is live
    removed = remove_gates(tiny_phi3)
    assert list(removed) == [0, 2] and list_gates(tiny_phi3) == {}
    assert all(not layer.self_attn._forward_hooks for layer in tiny_phi3.model.layers)
    # R = exp(0) = I exactly (and Cayley's, Taylor's), and x·I adds only exact zeros: no
    # rounding at all, so the logits are bit-identical on any CPU.
    assert torch.equal(_logits(tiny_phi3, batch), before)


def test_gate_rotates_the_attention_output(tiny_phi3):
    attn = tiny_phi3.model.layers[1].self_attn
    captured = {}
    attn.o_proj.register_forward_hook(lambda m, a, out: captured.__setitem__("o_proj", out))
    install_gates(tiny_phi3, SO8TConfig(layer_indices=[1], init_scale=0.3))
    attn.register_forward_hook(lambda m, a, out: captured.__setitem__("attn", out[0]))
    with torch.no_grad():
        tiny_phi3(input_ids=torch.tensor([[5, 6, 7, 8]]))
    expected = captured["o_proj"] @ attn.so8t_gate.block_diagonal()
    # Both are 8-term dot products of the o_proj output with R's columns (|R_kj| <= 1).
    tol = 2 * accumulation_bound(torch.float32, 8, captured["o_proj"].abs().max().item() * 8)
    assert torch.allclose(captured["attn"], expected, rtol=0, atol=tol)


@pytest.mark.parametrize("parametrization", ["exp", "cayley", "taylor"])
def test_zero_init_leaves_logits_unchanged(tiny_phi3, batch, parametrization):
    before = _logits(tiny_phi3, batch)
    install_gates(tiny_phi3, SO8TConfig(init="zeros", parametrization=parametrization))
    assert len(list_gates(tiny_phi3)) == 3
    # R = exp(0) = I exactly (and Cayley's, Taylor's), and x·I adds only exact zeros: no
    # rounding at all, so the logits are bit-identical on any CPU.
    assert torch.equal(_logits(tiny_phi3, batch), before)


def test_seeded_install_is_deterministic(make_phi3):
    a, b = make_phi3(), make_phi3()
    install_gates(a, SO8TConfig(seed=7))
    install_gates(b, SO8TConfig(seed=7))
    for ta, tb in zip(gate_parameters(a), gate_parameters(b)):
        assert torch.equal(ta, tb)
    assert not torch.equal(gate_parameters(a)[0], gate_parameters(a)[1])


def test_install_errors(tiny_phi3, make_phi3):
    with pytest.raises(ValueError, match="out of range"):
        install_gates(tiny_phi3, SO8TConfig(layer_indices=[3]))
    install_gates(tiny_phi3)
    with pytest.raises(ValueError, match="already installed"):
        install_gates(tiny_phi3)
    with pytest.raises(ValueError, match="D=36"):
        install_gates(make_phi3(num_layers=1, hidden=36))  # 4 heads of 9: not a multiple of 8
    with pytest.raises(ValueError, match="layers"):
        install_gates(torch.nn.Linear(8, 8))


@pytest.mark.parametrize("order", ["gates_then_peft", "peft_then_gates"])
def test_gates_train_beside_lora(tiny_phi3, batch, make_lora_config, order):
    if order == "gates_then_peft":
        install_gates(tiny_phi3, SO8TConfig(init_scale=0.05))
        model = get_peft_model(tiny_phi3, make_lora_config())
        assert not any(p.requires_grad for p in gate_parameters(model))  # PEFT froze θ ...
        mark_gates_trainable(model)  # ... and this is the documented fix
    else:
        model = get_peft_model(tiny_phi3, make_lora_config())
        install_gates(model, SO8TConfig(init_scale=0.05))
    thetas = gate_parameters(model)
    assert len(thetas) == 3 and all(p.requires_grad for p in thetas)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable)
    assert sum("so8t_gate.theta" in n for n in trainable) == 3
    assert all("lora_" in n or "so8t_gate" in n for n in trainable)
    model.train()
    input_ids, attention_mask = batch
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=input_ids)
    out.loss.backward()
    for theta in thetas:
        assert theta.grad is not None and theta.grad.abs().sum() > 0
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before = [t.detach().clone() for t in thetas]
    optimizer.step()
    assert all(not torch.equal(b, t) for b, t in zip(before, thetas))


def test_save_load_gates_round_trip(tiny_phi3, make_phi3, batch, tmp_path):
    install_gates(
        tiny_phi3, SO8TConfig(layer_indices=[0, 2], init_scale=0.3, parametrization="cayley")
    )
    expected = _logits(tiny_phi3, batch)
    save_gates(tiny_phi3, tmp_path)
    assert (tmp_path / GATES_FILE).is_file()
    saved = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert saved["layer_indices"] == [0, 2] and saved["hidden_size"] == 64
    assert saved["parametrization"] == "cayley"

    fresh = make_phi3()
    gates = load_gates(fresh, tmp_path)
    assert [g.layer_idx for g in gates] == [0, 2] and gates[0].parametrization == "cayley"
    assert not any(p.requires_grad for p in gate_parameters(fresh))
    # The same operations on the same weights and inputs in one process: bit-identical.
    assert torch.equal(_logits(fresh, batch), expected)
    for key, value in get_gate_state_dict(tiny_phi3).items():
        assert torch.equal(get_gate_state_dict(fresh)[key], value)


def test_save_resolves_all_layers(tiny_phi3, tmp_path):
    install_gates(tiny_phi3, SO8TConfig(layer_indices=None))
    save_gates(tiny_phi3, tmp_path)
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["layer_indices"] == [0, 1, 2]


def test_load_gates_mismatch_errors(tiny_phi3, make_phi3, tmp_path):
    install_gates(tiny_phi3, SO8TConfig(layer_indices=[2]))
    save_gates(tiny_phi3, tmp_path)
    with pytest.raises(ValueError, match="hidden size 64.*hidden size 128"):
        load_gates(make_phi3(hidden=128), tmp_path)
    with pytest.raises(ValueError, match=r"layers \[2\].*only 2 layers"):
        load_gates(make_phi3(num_layers=2), tmp_path)
    # weights file and config disagree on the layer set
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config["layer_indices"] = [0, 2]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    target = make_phi3()
    with pytest.raises(ValueError, match="lists layers"):
        load_gates(target, tmp_path)
    assert list_gates(target) == {}
    with pytest.raises(FileNotFoundError):
        load_gates(make_phi3(), tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no SO8T gates"):
        save_gates(make_phi3(), tmp_path / "empty")


def test_save_load_adapter_round_trip(
    tiny_phi3, make_phi3, batch, tmp_path, make_lora_config, fill_lora
):
    model = get_peft_model(tiny_phi3, make_lora_config())
    install_gates(model, SO8TConfig(init_scale=0.3, layer_indices=[1, 2]))
    fill_lora(model)
    model.eval()
    expected = _logits(model, batch)
    save_adapter(model, tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", GATES_FILE, CONFIG_FILE} <= names

    loaded = load_adapter(make_phi3(), tmp_path)
    assert isinstance(loaded, PeftModel) and list(list_gates(loaded)) == [1, 2]
    assert torch.equal(_logits(loaded, batch), expected)
    assert not any(p.requires_grad for p in loaded.parameters())

    trainable = load_adapter(make_phi3(), tmp_path, is_trainable=True)
    assert all(p.requires_grad for p in gate_parameters(trainable))
    assert any(p.requires_grad for n, p in trainable.named_parameters() if "lora_B" in n)


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_theta_gradients_under_gradient_checkpointing(
    make_phi3, batch, make_lora_config, fill_lora, use_reentrant
):
    """R is computed inside the hooked layer, so both checkpointing modes give the same θ.grad."""
    grads = {}
    for checkpointing in (False, True):
        model = get_peft_model(make_phi3(), make_lora_config())
        install_gates(model, SO8TConfig(layer_indices=[0, 2], init_scale=0.3))
        fill_lora(model)
        if checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": use_reentrant}
            )
            model.enable_input_require_grads()
        model.train()
        input_ids, attention_mask = batch
        model(input_ids=input_ids, attention_mask=attention_mask, labels=input_ids).loss.backward()
        grads[checkpointing] = [p.grad.clone() for p in gate_parameters(model)]
    for plain, ckpt in zip(grads[False], grads[True]):
        assert plain.abs().sum() > 0
        # Checkpointing re-runs the same forward operations and accumulates θ's gradient in the
    # same order: bit-identical, no tolerance to tune.
    assert torch.equal(plain, ckpt)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_model_keeps_fp32_theta(make_phi3, batch, dtype):
    reference = make_phi3()
    install_gates(reference, SO8TConfig(init_scale=0.3))
    model = make_phi3().to(dtype)
    install_gates(model, SO8TConfig(init_scale=0.3))  # same seed: same θ
    assert all(p.dtype == torch.float32 for p in gate_parameters(model))
    logits = _logits(model, batch)
    assert logits.dtype == dtype
    ref = _logits(reference, batch)
    assert (logits.float() - ref).abs().max() < 0.05 * ref.abs().max()
