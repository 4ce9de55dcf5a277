"""Loading a base model on a device, and saving one.

* ``load_base_model``: the one loader for the saved embedded default and for a real local
  Borea-Phi-3.5 directory alike (optionally quantised with bitsandbytes);
* ``load_base_model_for``: the same, in the dtype and placement a ``torch.device`` wants;
* ``save_base_model``: ``save_pretrained`` for model and tokenizer, plus the SentencePiece
  ``tokenizer.model`` (transformers 5 does not write it; llama.cpp's GGUF conversion reads it).

Framework-free: transformers and torch only (no Kedro).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

SPM_FILENAME = "tokenizer.model"
QUANTIZATION_MODES: tuple[str | None, ...] = (None, "8bit", "4bit")


def save_base_model(model, tokenizer, out_dir: str | os.PathLike) -> Path:
    """``save_pretrained`` for the model and the tokenizer, plus ``tokenizer.model``.

    The SentencePiece model comes from ``tokenizer.sp_model_bytes`` (embedded tokenizer)
    or ``tokenizer.vocab_file`` (a tokenizer loaded from a directory that had one). A
    tokenizer with neither (e.g. a ``tokenizer.json``-only checkpoint) is saved without it.
    Returns ``out_dir`` as a ``Path``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    target = out / SPM_FILENAME
    model_bytes = getattr(tokenizer, "sp_model_bytes", None)
    vocab_file = getattr(tokenizer, "vocab_file", None)
    if model_bytes:
        target.write_bytes(model_bytes)
    elif (vocab_file and str(vocab_file).endswith(".model") and Path(vocab_file).is_file()
          and Path(vocab_file).resolve() != target.resolve()):
        shutil.copyfile(vocab_file, target)
    return out


def _quantization_config(quantization: str | None, dtype):
    if quantization not in QUANTIZATION_MODES:
        raise ValueError(f"quantization must be one of {QUANTIZATION_MODES}, got {quantization!r}")
    if quantization is None:
        return None
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = dtype or (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )


def _resolve_dtype(dtype):
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    resolved = getattr(torch, str(dtype).removeprefix("torch."), None)
    if isinstance(resolved, torch.dtype):
        return resolved
    raise ValueError(f"unknown dtype {dtype!r}")


def load_phi3_config(path: str | os.PathLike, *, trust_remote_code: bool = False):
    """The transformers config of a local Phi-3 directory (which also normalises a legacy
    ``rope_scaling`` into ``rope_parameters``). Raises ``FileNotFoundError`` /
    ``ValueError`` naming the path and what was found."""
    from transformers import AutoConfig

    directory = Path(path).expanduser()
    if not directory.exists():
        raise FileNotFoundError(f"base model directory {str(directory)!r} does not exist")
    if not directory.is_dir():
        raise FileNotFoundError(f"base model path {str(directory)!r} is not a directory")
    if not (directory / "config.json").is_file():
        found = sorted(p.name for p in directory.iterdir())[:20]
        raise FileNotFoundError(
            f"base model directory {str(directory)!r} has no config.json (not a Hugging Face "
            f"model directory); found: {found}"
        )
    config = AutoConfig.from_pretrained(
        directory, local_files_only=True, trust_remote_code=trust_remote_code
    )
    if getattr(config, "model_type", None) != "phi3":
        raise ValueError(
            f"base model at {str(directory)!r} is not a Phi-3 model: config.model_type is "
            f"{getattr(config, 'model_type', None)!r} (architectures "
            f"{getattr(config, 'architectures', None)}); expected 'phi3' "
            "(Phi3ForCausalLM, e.g. Borea-Phi-3.5-mini-Instruct-Jp)"
        )
    return config


def load_base_model(
    path: str | os.PathLike,
    *,
    dtype=None,
    quantization: str | None = None,
    trust_remote_code: bool = False,
    device_map=None,
):
    """Load ``(model, tokenizer)`` from a local Hugging Face directory of a Phi-3 model.

    ``local_files_only`` always; remote code only with ``trust_remote_code=True`` (the
    built-in ``Phi3ForCausalLM`` reads Borea-Phi-3.5 without it). ``dtype``: a
    ``torch.dtype``, its name (``"bfloat16"``) or ``"auto"``; ``None`` keeps fp32 (4-bit:
    the compute dtype, bf16 on CUDA / fp32 on CPU). ``quantization``: ``None``, ``"8bit"``
    (LLM.int8) or ``"4bit"`` (NF4, double quantisation), through bitsandbytes.
    Raises ``FileNotFoundError`` / ``ValueError`` naming the path and what was found.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = Path(path).expanduser()
    config = load_phi3_config(directory, trust_remote_code=trust_remote_code)
    dtype = _resolve_dtype(dtype)
    quantization_config = _quantization_config(quantization, dtype)
    kwargs: dict[str, Any] = {"local_files_only": True, "trust_remote_code": trust_remote_code}
    if dtype is not None:
        kwargs["dtype"] = dtype
    elif quantization == "4bit":
        kwargs["dtype"] = quantization_config.bnb_4bit_compute_dtype
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if device_map is not None:
        kwargs["device_map"] = device_map
    tokenizer = AutoTokenizer.from_pretrained(
        directory, local_files_only=True, trust_remote_code=trust_remote_code
    )
    model = AutoModelForCausalLM.from_pretrained(directory, config=config, **kwargs)
    model.eval()
    return model, tokenizer


def load_base_model_for(device, path: str | os.PathLike, *, quantization: str | None = None,
                        bf16_on_cuda: bool = True, trust_remote_code: bool = False):
    """:func:`load_base_model` to run on ``device`` (a ``torch.device``): bf16 on CUDA
    (unless ``bf16_on_cuda`` is false), fp32 on the CPU. On CUDA the weights load straight
    onto the device: a bitsandbytes 8-/4-bit model cannot be moved with ``.to()`` later."""
    on_cuda = device.type == "cuda"
    return load_base_model(
        path,
        dtype=torch.bfloat16 if on_cuda and bf16_on_cuda else torch.float32,
        quantization=quantization,
        trust_remote_code=trust_remote_code,
        device_map={"": device} if on_cuda else None,
    )


__all__ = [
    "QUANTIZATION_MODES",
    "SPM_FILENAME",
    "load_base_model",
    "load_base_model_for",
    "load_phi3_config",
    "save_base_model",
]
