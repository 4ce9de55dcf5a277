"""Fold ("bake") SO8T gates and LoRA into plain Phi-3 weights.

A gate sits after ``o_proj``: y = x·Wᵀ (+ b), z = y·R with R = blockdiag(R_0, …, R_{B−1}).
Then z = x·(WᵀR) + b·R = x·(RᵀW)ᵀ + b·R, so the folded Linear has

    W′ = Rᵀ·W,   b′ = b·R.

(W·R, the formula of the original notes, is wrong for this convention.) The fold is done in
float64 from θ (R recomputed in float64) and cast to the weight's dtype once.

Order of operations in :func:`bake`: dequantise (if the base is bitsandbytes 8-/4-bit) →
``merge_and_unload`` the LoRA adapter → fold the gates into ``o_proj`` → remove the gates →
cast to the requested dtype. The result is a stock ``Phi3ForCausalLM``: no extra
modules, parameters or hooks; ``save_pretrained`` output loads with
``AutoModelForCausalLM.from_pretrained`` and no custom code.

Quantised bases: the preferred path is :func:`bake_from_adapter`, which reloads the base
unquantised from its directory and applies the saved adapter + gates. An in-memory
quantised model is also handled, by :func:`dequantize_model`: it builds an unquantised twin
of the base (weights dequantised with bitsandbytes' ``dequantize_4bit`` /
``int8_vectorwise_dequant``), re-applies the same LoRA
config and weights and the same gates, and bakes that. Either way the baked weights are the
dequantised base + LoRA delta, rotated; the quantised forward (which, for 8-bit, also
quantises activations) is matched only up to quantisation error.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from .model import (
    GATE_ATTR,
    _has_gate_hook,
    decoder_layers,
    gate_config,
    get_gate_state_dict,
    has_saved_gates,
    list_gates,
    load_adapter,
    load_gates,
    remove_gates,
    restore_gates,
)

BLOCK = 8


def _is_peft_model(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def _is_tuner_layer(module: nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return isinstance(module, BaseTunerLayer)


def _is_bnb_linear(module: nn.Module) -> bool:
    try:
        import bitsandbytes as bnb
    except ImportError:  # pragma: no cover
        return False
    return isinstance(module, (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit))


def is_quantized(model: nn.Module) -> bool:
    """True if any Linear of the model is a bitsandbytes 8-bit or 4-bit layer."""
    return any(_is_bnb_linear(module) for module in model.modules())


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise TypeError(f"unknown dtype {dtype!r}")
    return value


# --------------------------------------------------------------------------- the fold


@torch.no_grad()
def fold_rotation_into_linear(linear: nn.Linear, rotation: torch.Tensor) -> None:
    """In place: W ← Rᵀ·W and b ← b·R for a block-diagonal R given as ``[B, 8, 8]`` blocks.

    ``linear`` must be a plain ``nn.Linear`` with ``out_features == 8·B`` (merge LoRA and
    dequantise first). Computed in float64, written back in the weight's dtype.
    """
    if type(linear) is not nn.Linear:
        raise TypeError(
            f"can only fold into a plain nn.Linear, got {type(linear).__name__} "
            "(merge LoRA and dequantise first)"
        )
    out_features, in_features = linear.weight.shape
    n_blocks = rotation.shape[0]
    if tuple(rotation.shape) != (n_blocks, BLOCK, BLOCK) or out_features != BLOCK * n_blocks:
        raise ValueError(
            f"rotation of shape {tuple(rotation.shape)} does not fit a Linear with "
            f"out_features={out_features}"
        )
    rot = rotation.to(device=linear.weight.device, dtype=torch.float64)
    weight = linear.weight.to(torch.float64).reshape(n_blocks, BLOCK, in_features)
    # W′_b = R_bᵀ W_b : W′_b[i, k] = Σ_j R_b[j, i] · W_b[j, k]
    folded = torch.einsum("bji,bjk->bik", rot, weight).reshape(out_features, in_features)
    linear.weight.copy_(folded.to(linear.weight.dtype))
    if linear.bias is not None:
        bias = linear.bias.to(torch.float64).reshape(n_blocks, BLOCK)
        linear.bias.copy_(torch.einsum("bi,bij->bj", bias, rot).reshape(-1).to(linear.bias.dtype))


def bake_gates(model: nn.Module) -> nn.Module:
    """Fold every installed gate into its layer's ``o_proj`` and remove the gates (in place).

    The model must not carry LoRA layers or quantised layers (use :func:`bake` for those).
    """
    layers = decoder_layers(model)
    for i, gate in list_gates(model).items():
        fold_rotation_into_linear(layers[i].self_attn.o_proj, gate.rotation(torch.float64))
    remove_gates(model)
    return model


# --------------------------------------------------------------------------- dequantisation


def dequantize_bnb_linear(module: nn.Module) -> torch.Tensor:
    """The float weight of a bitsandbytes ``Linear8bitLt`` / ``Linear4bit``, without side effects.

    Uses bitsandbytes' own ``dequantize_4bit`` (NF4/FP4, with the layer's ``quant_state``) and
    ``int8_vectorwise_dequant`` (LLM.int8 row scales ``SCB``). Not PEFT's
    ``dequantize_module_weight``: on CPU that helper re-assigns ``module.weight`` through
    ``Int8Params.to``, which drops ``SCB`` once the layer has run a forward, and the next
    8-bit forward then fails inside ``int8_mm_dequant`` (``col_stats`` is None).
    """
    import bitsandbytes as bnb

    weight = module.weight
    if isinstance(module, bnb.nn.Linear4bit):
        return bnb.functional.dequantize_4bit(weight.data, weight.quant_state)
    if isinstance(module, bnb.nn.Linear8bitLt):
        if weight.data.dtype != torch.int8:  # has_fp16_weights=True: never quantised
            return weight.data
        scb = module.state.SCB if module.state.SCB is not None else weight.SCB
        if scb is None:
            raise ValueError("8-bit layer has no SCB row scales; cannot dequantise it")
        return bnb.functional.int8_vectorwise_dequant(weight.data, scb.to(weight.device))
    raise TypeError(f"not a bitsandbytes quantised Linear: {type(module).__name__}")


@torch.no_grad()
def dequantize_model(model: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """An unquantised copy of a bitsandbytes 8-/4-bit model, with its LoRA and gates.

    Builds a fresh model of the base's class from its config (``quantization_config``
    removed), fills it with the dequantised base weights (:func:`dequantize_bnb_linear`,
    bitsandbytes' own dequantisation) and the other
    weights as they are, then, if ``model`` is a ``PeftModel``, wraps the copy with the
    same LoRA config and copies the active adapter's weights, and finally re-installs the
    same SO8T gates with the same θ. The input model is not modified (it still runs).
    """
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    peft_model = model if _is_peft_model(model) else None
    base = model.get_base_model() if peft_model is not None else model
    config = copy.deepcopy(base.config)
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    twin = type(base)(config).to(dtype)

    modules = dict(base.named_modules())
    state = {}
    for name in twin.state_dict():
        module_name, _, param_name = name.rpartition(".")
        source = modules[module_name]
        if _is_tuner_layer(source):
            source = source.get_base_layer()
        if param_name == "weight" and _is_bnb_linear(source):
            value = dequantize_bnb_linear(source)
        else:
            value = getattr(source, param_name)
        state[name] = value.detach().to(device="cpu", dtype=dtype)
    twin.load_state_dict(state, strict=True)

    result: nn.Module = twin
    if peft_model is not None:
        adapter = peft_model.active_adapter
        peft_config = copy.deepcopy(peft_model.peft_config[adapter])
        peft_config.inference_mode = False
        result = get_peft_model(twin, peft_config, adapter_name=adapter)
        adapter_state = get_peft_model_state_dict(peft_model, adapter_name=adapter)
        adapter_state = {k: v.detach().to("cpu", dtype) for k, v in adapter_state.items()}
        set_peft_model_state_dict(result, adapter_state, adapter_name=adapter)
    if list_gates(model):
        state = {k: v.to("cpu") for k, v in get_gate_state_dict(model).items()}
        restore_gates(result, gate_config(model), state, trainable=True)
    return result


# --------------------------------------------------------------------------- bake


def assert_stock(model: nn.Module) -> None:
    """Raise if ``model`` still carries SO8T gates/hooks, LoRA layers or quantised layers."""
    if _is_peft_model(model):
        raise ValueError("model is still a PeftModel; merge_and_unload it first")
    for name, module in model.named_modules():
        if GATE_ATTR in module._modules or _has_gate_hook(module):
            raise ValueError(f"module {name!r} still carries an SO8T gate or hook")
        if _is_tuner_layer(module):
            raise ValueError(f"module {name!r} is still a PEFT tuner layer")
        if _is_bnb_linear(module):
            raise ValueError(f"module {name!r} is still a bitsandbytes quantised layer")


def _weights_dtype(model: nn.Module) -> torch.dtype:
    """The dtype the model's (unquantised) weights are kept in: that of its input embeddings."""
    return model.get_input_embeddings().weight.dtype


def bake(
    model: nn.Module,
    dtype: torch.dtype | str | None = None,
    *,
    inplace: bool = False,
    work_dtype: torch.dtype | str | None = torch.float32,
) -> nn.Module:
    """Turn a gated (optionally LoRA-wrapped, optionally quantised) model into a stock one.

    Args:
        model: ``Phi3ForCausalLM`` with gates, or a ``PeftModel`` around one.
        dtype: dtype of the returned weights; ``None`` keeps the dtype of the model's
            unquantised weights (its input embeddings).
        inplace: modify ``model`` itself (saves memory) instead of a deep copy. A quantised
            model is never modified: a dequantised copy is baked.
        work_dtype: dtype in which LoRA is merged (the gate fold itself is always done in
            float64); float32 by default, so a bf16 model is upcast for the merge and cast
            to ``dtype`` once at the end. ``None`` merges in the model's own dtype (less
            memory, one more rounding).

    Returns:
        A plain ``PreTrainedModel`` of the base's class (``Phi3ForCausalLM``), in eval mode,
        whose logits match the gated model's (to float error; to quantisation error for an
        8-/4-bit input).
    """
    dtype = _as_dtype(dtype) or _weights_dtype(model)
    work_dtype = _as_dtype(work_dtype)
    if is_quantized(model):
        model = dequantize_model(model, dtype=work_dtype or torch.float32)
    else:
        if not inplace:
            model = copy.deepcopy(model)
        if work_dtype is not None:
            model.to(work_dtype)
    if _is_peft_model(model):
        model = model.merge_and_unload()
    bake_gates(model)
    model.to(dtype)
    assert_stock(model)
    return model.eval()


def bake_from_adapter(
    base_model_dir: str | Path,
    adapter_dir: str | Path,
    dtype: torch.dtype | str | None = None,
) -> nn.Module:
    """Preferred bake path: reload the base *unquantised* and apply the saved adapter + gates.

    The base is loaded in float32 (LoRA merged in float32, gates folded in float64) and
    the result is cast to ``dtype`` (``None``: the dtype recorded in the base's config,
    float32 if none). ``adapter_dir`` is what :func:`save_adapter` wrote: a PEFT adapter
    and/or ``so8t_gates.safetensors`` + ``so8t_config.json``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    adapter_dir = Path(adapter_dir)
    if dtype is None:
        dtype = getattr(AutoConfig.from_pretrained(str(base_model_dir)), "dtype", None)
    dtype = _as_dtype(dtype) or torch.float32
    base = AutoModelForCausalLM.from_pretrained(str(base_model_dir), dtype=torch.float32)
    if (adapter_dir / "adapter_config.json").is_file():
        model = load_adapter(base, adapter_dir)
    elif has_saved_gates(adapter_dir):
        model = base
        load_gates(model, adapter_dir)
    else:
        raise FileNotFoundError(f"{adapter_dir} holds neither a PEFT adapter nor SO8T gates")
    return bake(model, dtype, inplace=True)


def save_baked(model: nn.Module, tokenizer=None, out_dir: str | Path = "baked_model") -> Path:
    """``save_pretrained`` a baked model (and its tokenizer, if given) into ``out_dir``."""
    assert_stock(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out_dir))
    return out_dir


@torch.no_grad()
def verify_bake(
    gated_model: nn.Module,
    baked_model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> dict:
    """Compare the logits of the gated and baked models on the same batch (eval mode).

    Returns ``{"max_abs_logit_diff": float, "top1_agreement": float, "n_tokens": int}``,
    computed over the unmasked positions only.
    """
    results = []
    for model in (gated_model, baked_model):
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        out = model(
            input_ids=input_ids.to(device),
            attention_mask=None if attention_mask is None else attention_mask.to(device),
        )
        results.append(out.logits.detach().to("cpu", torch.float32))
        model.train(was_training)
    gated, baked = results
    if attention_mask is None:
        valid = torch.ones(gated.shape[:2], dtype=torch.bool)
    else:
        valid = attention_mask.to("cpu").bool()
    n_tokens = int(valid.sum())
    if n_tokens == 0:
        return {"max_abs_logit_diff": 0.0, "top1_agreement": 1.0, "n_tokens": 0}
    diff = (gated - baked).abs()[valid]
    agree = (gated.argmax(-1) == baked.argmax(-1))[valid]
    return {
        "max_abs_logit_diff": float(diff.max()),
        "top1_agreement": float(agree.float().mean()),
        "n_tokens": n_tokens,
    }
