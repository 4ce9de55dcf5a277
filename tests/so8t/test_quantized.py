"""Gates + LoRA on a bitsandbytes 8-bit / NF4 4-bit tiny Phi-3, on the CPU."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")

from peft import get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, Phi3ForCausalLM

from so8t_kedro.so8t import (
    SO8TConfig,
    bake,
    bake_from_adapter,
    dequantize_model,
    gate_parameters,
    install_gates,
    is_quantized,
    list_gates,
    load_adapter,
    save_adapter,
    save_baked,
    verify_bake,
)
from tests.helpers.tolerances import forward_bound, rounded_operands_bound, unit_roundoff

QUANT = {
    "8bit": lambda: BitsAndBytesConfig(load_in_8bit=True),
    "nf4": lambda: BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    ),
}
LAYER_TYPE = {"8bit": "Linear8bitLt", "nf4": "Linear4bit"}


def crest(rows: torch.Tensor) -> float:
    """max over rows of max|row| / mean|row|: how much larger than a typical term the
    absmax quantisation step (row max / 127) can be."""
    rows = rows.detach().float().flatten(0, -2).abs()
    return (rows.amax(-1) / rows.mean(-1).clamp_min(1e-30)).max().item()


def int8_unit(twin, batch) -> float:
    """LLM.int8 rounds each weight row and each activation row to int8 by its absolute
    maximum: a term's relative error is at most crest / 254 (half a step of max / 127)."""
    crests = []
    hooks = [module.register_forward_pre_hook(lambda m, args: crests.append(crest(args[0])))
             for name, module in twin.named_modules()
             if isinstance(module, torch.nn.Linear) and "lora_" not in name]
    with torch.no_grad():
        twin(input_ids=batch[0], attention_mask=batch[1])
    for hook in hooks:
        hook.remove()
    weights = [crest(module.weight) for name, module in twin.named_modules()
               if isinstance(module, torch.nn.Linear) and "lora_" not in name]
    return max(crests + weights) / 254


@pytest.fixture(params=sorted(QUANT))
def qlora_gated(request, tiny_phi3_dir, make_lora_config, fill_lora, fill_gates):
    """(kind, PeftModel) — quantised tiny Phi-3 from disk, prepared for k-bit training
    (gradient checkpointing on), LoRA + gates with random weights."""
    kind = request.param
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = AutoModelForCausalLM.from_pretrained(
            tiny_phi3_dir, quantization_config=QUANT[kind](), device_map="cpu"
        )
    base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=True)
    model = get_peft_model(base, make_lora_config())
    install_gates(model, SO8TConfig(layer_indices=[0, 2]))
    fill_lora(model)
    fill_gates(model, scale=0.3)
    return kind, model


def test_quantised_forward_backward_trains_theta(qlora_gated, batch):
    kind, model = qlora_gated
    o_proj = model.get_base_model().model.layers[0].self_attn.o_proj
    assert type(o_proj.get_base_layer()).__name__ == LAYER_TYPE[kind]
    assert is_quantized(model)
    thetas = gate_parameters(model)
    assert len(thetas) == 2 and all(t.requires_grad and t.dtype == torch.float32 for t in thetas)
    model.train()
    input_ids, attention_mask = batch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=input_ids)
        out.loss.backward()
    assert torch.isfinite(out.loss)
    for theta in thetas:
        assert theta.grad is not None and theta.grad.abs().sum() > 0
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert lora_grads and all(g is not None and g.abs().sum() > 0 for g in lora_grads)


def test_bake_in_memory_quantised_model(qlora_gated, batch, tmp_path):
    kind, model = qlora_gated
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantised_logits = model(input_ids=batch[0], attention_mask=batch[1]).logits
        twin = dequantize_model(model)
        assert not is_quantized(twin) and list(list_gates(twin)) == [0, 2]
        baked = bake(model)
        # the quantised model still runs, unchanged, after being dequantised and baked
        again = model(input_ids=batch[0], attention_mask=batch[1]).logits
    assert torch.equal(quantised_logits, again)
    assert type(baked) is Phi3ForCausalLM and not is_quantized(baked)
    # exact w.r.t. the dequantised weights, up to float32 regrouping ...
    logits = baked(input_ids=batch[0], attention_mask=batch[1]).logits
    assert verify_bake(twin, baked, *batch)["max_abs_logit_diff"] <= forward_bound(
        torch.float32, baked.config, logits)
    # ... and up to the quantised forward's own rounding: LLM.int8 rounds the activations
    # to int8; on AVX512-BF16 CPUs bitsandbytes' eval-mode NF4 kernel multiplies in bf16
    # (measured 3e-3 here), in fp32 elsewhere.
    unit = int8_unit(twin, batch) if kind == "8bit" else unit_roundoff(torch.bfloat16)
    report = verify_bake(model, baked, *batch)
    assert report["max_abs_logit_diff"] <= rounded_operands_bound(
        unit, baked.config, logits.abs().max().item())
    assert report["top1_agreement"] >= 0.9
    out = save_baked(baked, None, tmp_path / "baked")
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    reloaded = AutoModelForCausalLM.from_pretrained(str(out))
    assert set(reloaded.state_dict()) == set(Phi3ForCausalLM(reloaded.config).state_dict())


def test_bake_from_adapter_trained_on_quantised_base(
    qlora_gated, batch, tmp_path, make_phi3, tiny_phi3_dir
):
    """Preferred path: adapter + gates trained on 8/4-bit, baked on the unquantised base."""
    _, model = qlora_gated
    save_adapter(model, tmp_path / "adapter")
    baked = bake_from_adapter(tiny_phi3_dir, tmp_path / "adapter")
    reference = load_adapter(make_phi3(seed=0), tmp_path / "adapter")  # unquantised + gates
    assert list(list_gates(reference)) == [0, 2]
    logits = baked(input_ids=batch[0], attention_mask=batch[1]).logits
    assert verify_bake(reference, baked, *batch)["max_abs_logit_diff"] <= forward_bound(
        torch.float32, baked.config, logits)
