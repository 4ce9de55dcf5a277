"""Install SO8T gates into a Hugging Face decoder, and save/load them beside a PEFT adapter.

The analogue of PEFT's ``oft/model.py``. Mechanism (chosen over replacing ``o_proj`` with
a wrapper module, because PEFT replaces ``o_proj`` itself with a LoRA layer and bitsandbytes
with a quantised one):

* the gate is registered as a submodule of the layer's attention module,
  ``layers[i].self_attn.so8t_gate``, so it moves with ``.to()`` / ``.cuda()`` and shows up in
  ``named_parameters()`` under a stable name;
* a forward hook on ``self_attn`` rotates the attention module's first output (the
  attention output after ``o_proj``) and passes the other outputs through unchanged.

Works the same on a bare ``Phi3ForCausalLM``, on a ``PeftModel`` wrapping it (before or
after ``get_peft_model``) and on an 8-/4-bit bitsandbytes base.

The adapter state dict is explicit: ``{"layers.<i>.theta": θ_i}`` in
``so8t_gates.safetensors``, with ``so8t_config.json`` (the :class:`SO8TConfig` with the
resolved layer list, plus the hidden size) next to the PEFT adapter files.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import SO8TConfig
from .gate import SO8RotationGate

GATE_ATTR = "so8t_gate"
GATES_FILE = "so8t_gates.safetensors"
CONFIG_FILE = "so8t_config.json"
FORMAT_VERSION = 1
_METADATA_KEYS = ("hidden_size", "num_hidden_layers", "so8t_format_version")


# --------------------------------------------------------------------------- locating layers


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder's ``layers`` ModuleList (found through any PEFT wrapping)."""
    for name, module in model.named_modules():
        if (
            (name == "layers" or name.endswith(".layers"))
            and isinstance(module, nn.ModuleList)
            and len(module) > 0
            and all(hasattr(layer, "self_attn") for layer in module)
        ):
            return module
    raise ValueError(
        f"{type(model).__name__} has no `layers` ModuleList whose layers have `self_attn`; "
        "SO8T gates support Phi-3 style decoders"
    )


def _hidden_size(model: nn.Module, layers: nn.ModuleList) -> int:
    attn_config = getattr(layers[0].self_attn, "config", None)
    config = attn_config if attn_config is not None else getattr(model, "config", None)
    hidden = getattr(config, "hidden_size", None)
    if hidden is None:
        raise ValueError(f"cannot find hidden_size in the config of {type(model).__name__}")
    return int(hidden)


def _module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")


def _gate_hook(module: nn.Module, args, output):
    """Forward hook on ``self_attn``: rotate the first output (attention output after o_proj)."""
    gate = getattr(module, GATE_ATTR)
    if isinstance(output, tuple):
        return (gate(output[0]), *output[1:])
    return gate(output)


def _has_gate_hook(module: nn.Module) -> bool:
    return any(hook is _gate_hook for hook in module._forward_hooks.values())


# --------------------------------------------------------------------------- install / remove


def install_gates(model: nn.Module, config: SO8TConfig | None = None) -> list[SO8RotationGate]:
    """Install one :class:`SO8RotationGate` on the attention output of each selected layer.

    Args:
        model: a ``Phi3ForCausalLM`` (or ``Phi3Model``), possibly quantised and/or wrapped by
            PEFT.
        config: where and how; ``SO8TConfig()`` (all layers, exp, N(0, 0.05²)) by default.

    Returns:
        The new gates in layer order. Their θ has ``requires_grad=True``. Note that
        ``peft.get_peft_model`` freezes every non-adapter parameter, θ included: install
        the gates *after* wrapping, or call :func:`mark_gates_trainable` afterwards.

    Raises:
        ValueError: if the hidden size is not a multiple of 8, a layer index does not exist,
            or gates are already installed.
    """
    config = config or SO8TConfig()
    layers = decoder_layers(model)
    n_layers = len(layers)
    indices = list(range(n_layers)) if config.layer_indices is None else config.layer_indices
    bad = [i for i in indices if not 0 <= i < n_layers]
    if bad:
        raise ValueError(f"layer_indices {bad} out of range for a model with {n_layers} layers")
    existing = sorted(list_gates(model))
    if existing:
        raise ValueError(f"SO8T gates already installed in layers {existing}; remove_gates first")
    hidden = _hidden_size(model, layers)
    generator = None
    if config.seed is not None and config.init == "normal":
        generator = torch.Generator(device="cpu").manual_seed(int(config.seed))
    gates = []
    for i in indices:
        attn = layers[i].self_attn
        gate = SO8RotationGate(
            hidden,
            init=config.init,
            init_scale=config.init_scale,
            parametrization=config.parametrization,
            taylor_order=config.taylor_order,
            generator=generator,
        ).to(_module_device(attn))
        gate.layer_idx = i
        gate.so8t_config = config
        attn.add_module(GATE_ATTR, gate)
        attn.register_forward_hook(_gate_hook)
        gates.append(gate)
    return gates


def list_gates(model: nn.Module) -> dict[int, SO8RotationGate]:
    """``{layer index: gate}`` of the installed gates, in layer order."""
    layers = decoder_layers(model)
    return {
        i: getattr(layer.self_attn, GATE_ATTR)
        for i, layer in enumerate(layers)
        if isinstance(getattr(layer.self_attn, GATE_ATTR, None), SO8RotationGate)
    }


def remove_gates(model: nn.Module) -> dict[int, SO8RotationGate]:
    """Remove every gate and its hook; the model computes exactly what it did before install.

    Returns the removed gates (``{layer index: gate}``).
    """
    removed = {}
    for i, layer in enumerate(decoder_layers(model)):
        attn = layer.self_attn
        for key in [k for k, hook in attn._forward_hooks.items() if hook is _gate_hook]:
            del attn._forward_hooks[key]
        if GATE_ATTR in attn._modules:
            removed[i] = attn._modules.pop(GATE_ATTR)
    return removed


def gate_parameters(model: nn.Module) -> list[nn.Parameter]:
    """θ of every installed gate, in layer order (for an optimiser's parameter groups)."""
    return [gate.theta for gate in list_gates(model).values()]


def mark_gates_trainable(model: nn.Module, trainable: bool = True) -> list[nn.Parameter]:
    """Set ``requires_grad`` on every θ (undoes the freezing done by ``get_peft_model``)."""
    params = gate_parameters(model)
    for param in params:
        param.requires_grad_(trainable)
    return params


# --------------------------------------------------------------------------- state dict


def get_gate_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The explicit adapter state dict of the gates: ``{"layers.<i>.theta": θ_i}``."""
    return {f"layers.{i}.theta": gate.theta.detach() for i, gate in list_gates(model).items()}


def set_gate_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Copy θ from ``state_dict`` into the installed gates; the key sets must match exactly."""
    gates = list_gates(model)
    expected = {f"layers.{i}.theta" for i in gates}
    if set(state_dict) != expected:
        missing = sorted(expected - set(state_dict))
        unexpected = sorted(set(state_dict) - expected)
        raise ValueError(
            f"SO8T gate state dict does not match the installed gates: "
            f"missing {missing}, unexpected {unexpected}"
        )
    with torch.no_grad():
        for i, gate in gates.items():
            value = state_dict[f"layers.{i}.theta"]
            if tuple(value.shape) != tuple(gate.theta.shape):
                raise ValueError(
                    f"θ of layer {i} has shape {tuple(value.shape)}, "
                    f"the gate expects {tuple(gate.theta.shape)}"
                )
            gate.theta.copy_(value)


# --------------------------------------------------------------------------- save / load


def _config_of(gates: dict[int, SO8RotationGate]) -> SO8TConfig:
    first = next(iter(gates.values()))
    base = getattr(first, "so8t_config", None) or SO8TConfig(
        init=first.init,
        init_scale=first.init_scale,
        parametrization=first.parametrization,
        taylor_order=first.taylor_order,
    )
    for i, gate in gates.items():
        if (gate.parametrization, gate.taylor_order) != (first.parametrization, first.taylor_order):
            raise ValueError(f"gate of layer {i} is parametrised differently from the others")
    return dataclasses.replace(base, layer_indices=sorted(gates))


def save_gates(model: nn.Module, adapter_dir: str | Path) -> Path:
    """Write ``so8t_gates.safetensors`` and ``so8t_config.json`` into ``adapter_dir``.

    The saved config lists the layers explicitly (``layer_indices`` resolved from ``None``)
    and records the hidden size, so :func:`load_gates` can refuse a mismatching model.
    """
    gates = list_gates(model)
    if not gates:
        raise ValueError("the model has no SO8T gates to save")
    adapter_dir = Path(adapter_dir)
    adapter_dir.mkdir(parents=True, exist_ok=True)
    config = _config_of(gates)
    layers = decoder_layers(model)
    tensors = {
        key: value.to("cpu", torch.float32).contiguous()
        for key, value in get_gate_state_dict(model).items()
    }
    save_file(tensors, str(adapter_dir / GATES_FILE), metadata={"format": "pt"})
    payload = {
        **config.to_dict(),
        "hidden_size": _hidden_size(model, layers),
        "num_hidden_layers": len(layers),
        "so8t_format_version": FORMAT_VERSION,
    }
    (adapter_dir / CONFIG_FILE).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return adapter_dir


def read_gate_config(adapter_dir: str | Path) -> tuple[SO8TConfig, dict]:
    """``(config, metadata)`` from ``so8t_config.json``."""
    path = Path(adapter_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {adapter_dir}")
    payload = json.loads(path.read_text(encoding="utf-8"))
    metadata = {key: payload.pop(key) for key in _METADATA_KEYS if key in payload}
    return SO8TConfig.from_dict(payload), metadata


def has_saved_gates(adapter_dir: str | Path) -> bool:
    return (Path(adapter_dir) / CONFIG_FILE).is_file()


def load_gates(
    model: nn.Module, adapter_dir: str | Path, *, trainable: bool = False
) -> list[SO8RotationGate]:
    """Re-install the gates saved by :func:`save_gates` and restore their θ.

    Raises:
        ValueError: the model's hidden size differs from the saved one, a saved layer index
            does not exist in the model, the weights file does not hold exactly the layers of
            the config, or the model already has gates.
    """
    adapter_dir = Path(adapter_dir)
    config, metadata = read_gate_config(adapter_dir)
    layers = decoder_layers(model)
    hidden = _hidden_size(model, layers)
    saved_hidden = metadata.get("hidden_size")
    if saved_hidden is not None and int(saved_hidden) != hidden:
        raise ValueError(
            f"SO8T gates in {adapter_dir} were saved for hidden size {saved_hidden}, "
            f"the model has hidden size {hidden}"
        )
    wanted = list(range(len(layers))) if config.layer_indices is None else config.layer_indices
    missing_layers = [i for i in wanted if i >= len(layers)]
    if missing_layers:
        raise ValueError(
            f"SO8T gates in {adapter_dir} are for layers {wanted}, but the model has only "
            f"{len(layers)} layers (missing {missing_layers})"
        )
    state = load_file(str(adapter_dir / GATES_FILE))
    expected = {f"layers.{i}.theta" for i in wanted}
    if set(state) != expected:
        raise ValueError(
            f"{GATES_FILE} in {adapter_dir} holds {sorted(state)}, but {CONFIG_FILE} lists "
            f"layers {wanted}"
        )
    return restore_gates(
        model, dataclasses.replace(config, layer_indices=wanted), state, trainable=trainable
    )


def restore_gates(
    model: nn.Module,
    config: SO8TConfig,
    state_dict: dict[str, torch.Tensor],
    *,
    trainable: bool = False,
) -> list[SO8RotationGate]:
    """Install gates as described by ``config`` and set θ from ``state_dict`` (no random init)."""
    gates = install_gates(model, dataclasses.replace(config, init="zeros"))
    for gate in gates:
        gate.so8t_config = config
    try:
        set_gate_state_dict(model, state_dict)
    except ValueError:
        remove_gates(model)
        raise
    mark_gates_trainable(model, trainable)
    return gates


def gate_config(model: nn.Module) -> SO8TConfig:
    """The :class:`SO8TConfig` of the installed gates, with ``layer_indices`` made explicit."""
    gates = list_gates(model)
    if not gates:
        raise ValueError("the model has no SO8T gates")
    return _config_of(gates)


def save_adapter(peft_model: nn.Module, adapter_dir: str | Path) -> Path:
    """``peft_model.save_pretrained(adapter_dir)`` plus :func:`save_gates` when gates exist."""
    adapter_dir = Path(adapter_dir)
    peft_model.save_pretrained(str(adapter_dir))
    if list_gates(peft_model):
        save_gates(peft_model, adapter_dir)
    return adapter_dir


def load_adapter(base_model: nn.Module, adapter_dir: str | Path, *, is_trainable: bool = False):
    """``PeftModel.from_pretrained`` plus :func:`load_gates` when the directory has gates.

    With ``is_trainable=True`` both the LoRA weights and θ are trainable; otherwise both are
    frozen (PEFT's inference mode).
    """
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    peft_model = PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=is_trainable)
    if has_saved_gates(adapter_dir):
        load_gates(peft_model, adapter_dir, trainable=is_trainable)
    return peft_model
