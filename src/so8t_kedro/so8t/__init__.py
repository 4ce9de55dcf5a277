"""SO8T: learnable SO(8) rotation gates on the attention output of Phi-3 style decoders.

Framework-free (torch + transformers + peft + bitsandbytes; never kedro). Laid out like a
PEFT tuner: ``config`` (SO8TConfig), ``gate`` (the layer), ``model`` (install / remove /
save / load on a Hugging Face model), plus ``regularizers`` and ``bake``.

Typical use::

    peft_model = get_peft_model(base, LoraConfig(...))
    install_gates(peft_model, SO8TConfig(layer_indices=None))   # after wrapping: θ trainable
    ... train on lm_loss + λ(step)·pet_loss(h, mask) + w·orthogonality_loss(list_gates(m)) ...
    save_adapter(peft_model, "adapter/")                        # PEFT files + so8t_* files
    baked = bake_from_adapter("base/", "adapter/", dtype="bfloat16")
    save_baked(baked, tokenizer, "baked/")                      # stock Phi3ForCausalLM
"""

from .bake import (
    assert_stock,
    bake,
    bake_from_adapter,
    bake_gates,
    dequantize_bnb_linear,
    dequantize_model,
    fold_rotation_into_linear,
    is_quantized,
    save_baked,
    verify_bake,
)
from .config import SO8TConfig
from .gate import SO8RotationGate, rotation_from_theta, skew
from .model import (
    CONFIG_FILE,
    GATES_FILE,
    decoder_layers,
    gate_config,
    gate_parameters,
    get_gate_state_dict,
    install_gates,
    list_gates,
    load_adapter,
    load_gates,
    mark_gates_trainable,
    remove_gates,
    restore_gates,
    save_adapter,
    save_gates,
    set_gate_state_dict,
)
from .regularizers import PETSchedule, orthogonality_loss, pet_loss

__all__ = [
    "CONFIG_FILE",
    "GATES_FILE",
    "PETSchedule",
    "SO8RotationGate",
    "SO8TConfig",
    "assert_stock",
    "bake",
    "bake_from_adapter",
    "bake_gates",
    "decoder_layers",
    "dequantize_bnb_linear",
    "dequantize_model",
    "fold_rotation_into_linear",
    "gate_config",
    "gate_parameters",
    "get_gate_state_dict",
    "install_gates",
    "is_quantized",
    "list_gates",
    "load_adapter",
    "load_gates",
    "mark_gates_trainable",
    "orthogonality_loss",
    "pet_loss",
    "remove_gates",
    "restore_gates",
    "rotation_from_theta",
    "save_adapter",
    "save_baked",
    "save_gates",
    "set_gate_state_dict",
    "skew",
    "verify_bake",
]
