"""GGUF export of a stock Hugging Face ``Phi3ForCausalLM`` directory, and its checks.

* ``write_gguf``: F16 or Q8_0 GGUF, written with the ``gguf`` package (llama.cpp's own
  Python GGUF library: ``GGUFWriter``, ``gguf.quants`` for Q8_0, its tensor-name map and
  ``SpecialVocab``);
* ``quantize_gguf``: Q4_K_M from the F16 file with llama.cpp's quantiser, through
  llama-cpp-python (``gguf.quants`` has no K-quant *quantiser*, only dequantisers);
* ``gguf_summary``: what a written file holds, read back with ``gguf.GGUFReader``;
* ``verify_gguf``: loads a file in llama.cpp (llama-cpp-python) and compares vocabulary,
  tokenisation and next-token logits with the Hugging Face tokenizer and fp32 model.

Framework-free (no Kedro): the ``export`` pipeline's nodes call these functions.

Why a writer of our own rather than llama.cpp's ``convert_hf_to_gguf.py``: that converter
is a script inside the llama.cpp repository (with its ``conversion/`` package), not part
of any pip-installable package; the ``gguf`` package on PyPI ships the file format only.
For the one architecture this project exports the writer is small, and it follows the
converter's ``Phi3MiniModel`` (``conversion/phi.py``) and llama.cpp's phi3 loader
(``src/models/phi3.cpp``):

* arch ``phi3``; tensor names from ``gguf``'s own name map (``token_embd``,
  ``blk.N.attn_qkv`` / ``attn_output`` / ``attn_norm`` / ``ffn_up`` / ``ffn_down`` /
  ``ffn_norm``, ``output_norm``, ``output``). ``qkv_proj`` and ``gate_up_proj`` stay fused
  and unpermuted: the loader wants ``ffn_up`` as ``{n_embd, 2*n_ff}`` and splits it gate
  first (SwiGLU), as Hugging Face's ``Phi3MLP`` does, and Phi-3 uses NeoX-style RoPE, which
  is Hugging Face's ``rotate_half``;
* 1-D tensors and norms in F32, every other weight in the file's type (Q8_0 falls back to
  F16 for a row length that is not a multiple of 32, as the converter does);
* LongRoPE (Phi-3.5's ``rope_scaling`` of type ``longrope``): ``rope_factors_long`` /
  ``rope_factors_short`` tensors and ``rope.scaling.attn_factor``, the attention scaling
  computed by transformers' own LongRoPE initialiser (so it is Hugging Face's number);
* the SentencePiece vocabulary from ``tokenizer.model`` (``tokenizer.ggml.model = llama``),
  with the tokenizer's added tokens as CONTROL (special) or USER_DEFINED, byte pieces as
  BYTE, and ids past the tokenizer (Phi-3.5 pads its 32011 tokens to 32064) as UNUSED
  ``[PADn]``.

Three tokenizer settings are derived from what the Hugging Face tokenizer *does*, because
llama.cpp's defaults for a ``llama`` vocabulary differ from Phi-3.5's tokenizer:

* ``add_bos_token``: llama.cpp adds ``<s>`` by default; Phi-3.5 (and the embedded default)
  does not. Written from whether ``tokenizer("a")`` starts with BOS.
* ``add_space_prefix``: llama.cpp prefixes a space to every text run that follows a special
  token; a ``legacy=False`` tokenizer (Phi-3.5's; Metaspace ``prepend_scheme="first"``)
  does not. Written from whether the piece after a special token starts with ``▁``.
  Caveat: such a tokenizer *does* prefix the very start of a text, which llama.cpp then
  does not, so a text that starts with a plain word (not a chat token) is split
  differently at its start (usually one ``▁`` piece less). Chat prompts start with a chat
  token and agree exactly (all 977 seed requests, rendered as chat prompts).
* ``general.name``: llama.cpp strips the whitespace after every special token when the
  model's name contains ``phi3`` or ``phi-3`` (``llama-vocab.cpp``; Phi-3's first tokenizer
  declared ``rstrip`` on its chat tokens). The name is the model directory's, adjusted so
  that rule matches the Hugging Face tokenizer's ``rstrip`` (see ``_gguf_name``).
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple

import gguf
import numpy as np

from so8t_kedro.export.llama_process import LlamaProcess, run_isolated
from so8t_kedro.models.loading import SPM_FILENAME, load_base_model, load_phi3_config

GGUF_OUTTYPES = ("F16", "Q8_0", "Q4_K_M")

#: The types ``write_gguf`` writes itself: (GGUF file type, weight tensor type).
_WRITER_TYPES = {
    "F16": (gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.F16),
    "Q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, gguf.GGMLQuantizationType.Q8_0),
}
#: The types only llama.cpp's quantiser writes (name of the llama-cpp-python constant).
_LLAMA_CPP_FTYPES = {"Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}

_ARCH = gguf.MODEL_ARCH.PHI3
#: Added tokens llama.cpp leaves un-stripped even under its Phi-3 name rule.
_NEVER_RSTRIPPED = ("<unk>", "<s>", "<|endoftext|>")
_PHI3_NAME = re.compile(r"(phi)-?3", re.IGNORECASE)
#: llama-cpp-python threads for ``verify_gguf``: the check runs beside other work.
_VERIFY_THREADS = 2


class _TensorPlan(NamedTuple):
    source: str | None  # safetensors file, or None for a generated tensor (rope factors)
    hf_name: str | None
    name: str
    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType


# --------------------------------------------------------------------------- writing


def write_gguf(model_dir: str | Path, out_path: str | Path, outtype: str) -> Path:
    """Write ``model_dir`` (a stock Hugging Face ``Phi3ForCausalLM`` directory) as a GGUF.

    ``outtype``: ``"F16"`` or ``"Q8_0"`` (``"Q4_K_M"`` comes from ``quantize_gguf`` on the
    F16 file). The directory needs ``config.json``, ``*.safetensors``, the tokenizer files
    and the SentencePiece ``tokenizer.model`` (``save_base_model`` writes it; transformers'
    own ``save_pretrained`` does not). Tensors are streamed one at a time, so memory stays
    at about one weight matrix. The file appears at ``out_path`` only when complete.
    Returns ``out_path``.
    """
    from safetensors import safe_open
    from transformers import AutoTokenizer

    model_dir, out_path = Path(model_dir), Path(out_path)
    if outtype not in _WRITER_TYPES:
        raise ValueError(f"write_gguf writes {sorted(_WRITER_TYPES)}, got {outtype!r}; "
                         f"{sorted(_LLAMA_CPP_FTYPES)} come from quantize_gguf(<F16 file>)")
    if not (model_dir / SPM_FILENAME).is_file():
        raise FileNotFoundError(
            f"{str(model_dir)!r} has no {SPM_FILENAME}: GGUF's llama vocabulary is read from "
            "the SentencePiece model, and transformers' save_pretrained does not write it. "
            "Save the model with so8t_kedro.models.loading.save_base_model, or copy "
            f"{SPM_FILENAME} from the original checkpoint into the directory")
    config = load_phi3_config(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    file_type, weight_type = _WRITER_TYPES[outtype]
    rope_factors, attn_factor = _longrope_factors(config)
    plan = _tensor_plan(model_dir, config.num_hidden_layers, weight_type, rope_factors)

    writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[_ARCH])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(_gguf_name(model_dir.resolve().name, _rstrips_special_tokens(tokenizer)))
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_hparams(writer, config, attn_factor)
    _add_vocab(writer, model_dir, tokenizer, config.vocab_size)
    for item in plan:
        byte_shape = gguf.quant_shape_to_byte_shape(item.shape, item.qtype)
        writer.add_tensor_info(item.name, byte_shape, np.dtype(np.uint8),
                               math.prod(byte_shape), raw_dtype=item.qtype)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.name}.partial")
    try:
        with ExitStack() as files:
            files.callback(writer.close)
            writer.write_header_to_file(partial)
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            shards = {source: files.enter_context(safe_open(source, framework="pt"))
                      for source in {item.source for item in plan} - {None}}
            for item in plan:
                # through torch: numpy has no bfloat16, the dtype of real Phi-3.5 checkpoints
                data = (rope_factors[item.name] if item.source is None
                        else shards[item.source].get_tensor(item.hf_name).float().numpy())
                writer.write_tensor_data(gguf.quants.quantize(data, item.qtype))
        os.replace(partial, out_path)
    finally:
        partial.unlink(missing_ok=True)
    return out_path


def _rope_dims(config) -> int:
    head_dim = config.hidden_size // config.num_attention_heads
    return int(head_dim * config.rope_parameters.get("partial_rotary_factor", 1.0))


def _longrope_factors(config) -> tuple[dict[str, np.ndarray], float | None]:
    """``({tensor name: factors}, attention factor)`` for a LongRoPE config, else ``({}, None)``."""
    rope = config.rope_parameters
    rope_type = rope.get("rope_type", "default")
    if rope_type == "default":
        return {}, None
    if rope_type != "longrope":
        raise NotImplementedError(f"rope type {rope_type!r}: GGUF export writes Phi-3's "
                                  "default RoPE and LongRoPE only")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    _, attention_factor = ROPE_INIT_FUNCTIONS["longrope"](config, "cpu")
    factors = {}
    for kind in ("long", "short"):
        values = np.asarray(rope[f"{kind}_factor"], dtype=np.float32)
        if values.shape != (_rope_dims(config) // 2,):
            raise ValueError(f"rope {kind}_factor has {values.size} values; LongRoPE needs "
                             f"rope dimensions / 2 = {_rope_dims(config) // 2}")
        tensor = getattr(gguf.MODEL_TENSOR, f"ROPE_FACTORS_{kind.upper()}")
        factors[f"{gguf.TENSOR_NAMES[tensor]}.weight"] = values
    return factors, float(attention_factor)


def _tensor_type(name: str, shape: Sequence[int], weight_type: gguf.GGMLQuantizationType
                 ) -> gguf.GGMLQuantizationType:
    """The converter's rule: F32 for 1-D tensors and norms (llama.cpp's norm kernels take
    F32), ``weight_type`` for the rest unless the row length does not fit its blocks."""
    if len(shape) <= 1 or name.endswith("_norm.weight"):
        return gguf.GGMLQuantizationType.F32
    block_size, _ = gguf.GGML_QUANT_SIZES[weight_type]
    if shape[-1] % block_size:
        return gguf.GGMLQuantizationType.F16
    return weight_type


def _tensor_plan(model_dir: Path, n_layers: int, weight_type: gguf.GGMLQuantizationType,
                 rope_factors: dict[str, np.ndarray]) -> list[_TensorPlan]:
    """Every tensor of the file, in order: the generated rope factors, then the model's."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{str(model_dir)!r} has no *.safetensors weights")
    names = gguf.get_tensor_name_map(_ARCH, n_layers)
    plan = [_TensorPlan(None, None, name, values.shape, gguf.GGMLQuantizationType.F32)
            for name, values in rope_factors.items()]
    unmapped = []
    for path in files:
        with safe_open(path, framework="pt") as handle:
            for hf_name in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if name is None:
                    unmapped.append(hf_name)
                    continue
                shape = tuple(handle.get_slice(hf_name).get_shape())
                plan.append(_TensorPlan(str(path), hf_name, name, shape,
                                        _tensor_type(name, shape, weight_type)))
    if unmapped:
        # A baked model is a stock Phi-3: a leftover gate or LoRA tensor means it is not.
        raise ValueError(f"{str(model_dir)!r}: tensors with no phi3 GGUF name (not a stock "
                         f"Phi3ForCausalLM?): {unmapped[:10]}")
    return plan


def _add_hparams(writer: gguf.GGUFWriter, config, attn_factor: float | None) -> None:
    writer.add_context_length(config.max_position_embeddings)
    writer.add_rope_scaling_orig_ctx_len(
        getattr(config, "original_max_position_embeddings", None)
        or config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(_rope_dims(config))
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    if attn_factor is not None:
        writer.add_rope_scaling_attn_factors(attn_factor)
    if config.sliding_window:
        writer.add_sliding_window(config.sliding_window)


def _add_vocab(writer: gguf.GGUFWriter, model_dir: Path, tokenizer, n_vocab: int) -> None:
    """SentencePiece pieces, scores and types, the added tokens, special ids, chat template."""
    token_type = gguf.TokenType
    tokens = [f"[PAD{i}]".encode() for i in range(n_vocab)]
    scores = [-10000.0] * n_vocab
    types = [token_type.UNUSED] * n_vocab
    pieces = list(gguf.SentencePieceVocab(model_dir).all_tokens())
    if len(pieces) > n_vocab:
        raise ValueError(f"{SPM_FILENAME} has {len(pieces)} pieces, more than the model's "
                         f"vocab_size {n_vocab}")
    for token_id, (piece, score, kind) in enumerate(pieces):
        tokens[token_id], scores[token_id], types[token_id] = piece, score, kind
    for token_id, added in sorted(tokenizer.added_tokens_decoder.items()):
        if token_id >= n_vocab:
            raise ValueError(f"added token {added.content!r} has id {token_id}, past the "
                             f"model's vocab_size {n_vocab}")
        content = added.content.encode("utf-8")
        if types[token_id] != token_type.UNUSED and tokens[token_id] != content:
            raise ValueError(f"token {token_id} is {tokens[token_id]!r} in {SPM_FILENAME} but "
                             f"{added.content!r} in the tokenizer: the files do not belong together")
        if types[token_id] in (token_type.CONTROL, token_type.UNKNOWN):
            continue  # SentencePiece's own <unk> / <s> / </s> keep their types
        tokens[token_id], scores[token_id] = content, -1000.0
        types[token_id] = token_type.CONTROL if added.special else token_type.USER_DEFINED
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_add_space_prefix(_prefixes_after_special_token(tokenizer))
    special = gguf.SpecialVocab(model_dir, n_vocab=n_vocab)
    special.add_special_token.update(_adds_special_tokens(tokenizer))
    special.add_to_gguf(writer, quiet=True)


def _adds_special_tokens(tokenizer) -> dict[str, bool]:
    """Whether encoding a text adds BOS / EOS (``tokenizer_config.json`` of transformers 5
    no longer records it, and llama.cpp's default for a llama vocabulary is to add BOS)."""
    ids = tokenizer("a")["input_ids"]
    return {"bos": tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id,
            "eos": tokenizer.eos_token_id is not None and ids[-1] == tokenizer.eos_token_id}


def _prefixes_after_special_token(tokenizer) -> bool:
    """Whether the text after a special token gets SentencePiece's ``▁`` prefix."""
    pieces = tokenizer.tokenize(f"{tokenizer.eos_token}a")
    return len(pieces) > 1 and pieces[1].startswith("\u2581")


def _rstrips_special_tokens(tokenizer) -> bool:
    """Whether the special tokens llama.cpp's Phi-3 rule would strip after do strip."""
    stripped = [added.rstrip for added in tokenizer.added_tokens_decoder.values()
                if added.special and added.content not in _NEVER_RSTRIPPED]
    return bool(stripped) and all(stripped)


def _gguf_name(name: str, rstrip_special: bool) -> str:
    """``general.name`` such that llama.cpp's name-keyed Phi-3 rule (strip whitespace after
    special *and* user-defined tokens when the name contains ``phi3``/``phi-3``) is on
    exactly when the Hugging Face tokenizer strips after its special tokens:
    ``"Borea-Phi-3.5-mini"`` becomes ``"Borea-Phi_3.5-mini"`` for a tokenizer that does not,
    ``"baked_model"`` becomes ``"baked_model-phi3"`` for one that does. The rule cannot tell
    special from user-defined tokens: with a stripping tokenizer, llama.cpp also strips after
    the (non-stripping) think tags, and only texts with a think tag followed by whitespace
    then tokenise differently; the other choice would differ after every chat token."""
    if bool(_PHI3_NAME.search(name)) == rstrip_special:
        return name
    if rstrip_special:
        return f"{name}-phi3"
    return _PHI3_NAME.sub(r"\1_3", name)


# --------------------------------------------------------------------------- quantising


def quantize_gguf(source_path: str | Path, out_path: str | Path, outtype: str = "Q4_K_M"
                  ) -> Path:
    """Quantise the F16 GGUF at ``source_path`` to ``outtype`` with llama.cpp's quantiser.

    llama.cpp picks each tensor's type (Q4_K_M: Q4_K, with Q6_K for ``output`` and for
    ``attn_v`` (here inside ``attn_qkv``) / ``ffn_down`` of some layers) and falls back to a
    32-block type (Q5_0, Q5_1, Q8_0) for a tensor whose row length is not a multiple of 256;
    ``gguf_summary(...)["tensors"]`` shows what each tensor got. The file appears at
    ``out_path`` only when complete. The quantiser runs in a child process
    (:func:`~so8t_kedro.export.llama_process.run_isolated`): a native crash raises
    ``NativeCrashError``.
    """
    source_path, out_path = Path(source_path), Path(out_path)
    if outtype not in _LLAMA_CPP_FTYPES:
        raise ValueError(f"quantize_gguf writes {sorted(_LLAMA_CPP_FTYPES)}, got {outtype!r}; "
                         f"{sorted(_WRITER_TYPES)} come from write_gguf")
    if not source_path.is_file():
        raise FileNotFoundError(f"no GGUF to quantise at {str(source_path)!r}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.name}.partial")
    try:
        status = run_isolated("quantize", source_path, _llama_quantize, str(source_path),
                              str(partial), _LLAMA_CPP_FTYPES[outtype])
        if status != 0:
            raise RuntimeError(f"llama.cpp could not quantise {str(source_path)!r} to {outtype} "
                               f"(status {status}); the source must be an F16/F32 GGUF")
        os.replace(partial, out_path)
    finally:
        partial.unlink(missing_ok=True)
    return out_path


def _llama_quantize(source: str, out: str, ftype_name: str) -> int:
    """llama.cpp's ``llama_model_quantize`` (run in a child process); its status."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype_name)
    return llama_cpp.llama_model_quantize(os.fsencode(source), os.fsencode(out),
                                          ctypes.byref(params))


# --------------------------------------------------------------------------- reading back


def gguf_summary(path: str | Path) -> dict[str, Any]:
    """What the GGUF at ``path`` holds, as a JSON-able dict.

    Keys: ``path``, ``file_size_bytes``, ``tensor_count``, ``architecture``, ``name``,
    ``file_type`` (e.g. ``"MOSTLY_Q4_K_M"``), ``context_length``, ``vocab_size`` (tokens in
    the file), ``tokenizer_model`` (``tokenizer.ggml.model``; None when absent),
    ``has_chat_template``, ``special_token_ids`` (bos / eos / unk / pad; None when absent),
    ``add_bos_token``, ``add_eos_token``, ``tensor_types`` (tensor count per type) and
    ``tensors`` (each tensor's type).
    """
    path = Path(path)
    reader = gguf.GGUFReader(path)

    def value(key: str):
        field = reader.get_field(key)
        return None if field is None else field.contents()

    keys = gguf.Keys.Tokenizer
    arch = value(gguf.Keys.General.ARCHITECTURE)
    file_type = value(gguf.Keys.General.FILE_TYPE)
    tokens = reader.get_field(keys.LIST)
    tensors = {tensor.name: tensor.tensor_type.name for tensor in reader.tensors}
    return {
        "path": str(path),
        "file_size_bytes": path.stat().st_size,
        "tensor_count": len(reader.tensors),
        "architecture": arch,
        "name": value(gguf.Keys.General.NAME),
        "file_type": None if file_type is None else gguf.LlamaFileType(file_type).name,
        "context_length": value(gguf.Keys.LLM.CONTEXT_LENGTH.format(arch=arch)),
        "vocab_size": 0 if tokens is None else len(tokens.data),
        "tokenizer_model": value(keys.MODEL),
        "has_chat_template": reader.get_field(keys.CHAT_TEMPLATE) is not None,
        "special_token_ids": {kind: value(key) for kind, key in (
            ("bos", keys.BOS_ID), ("eos", keys.EOS_ID), ("unk", keys.UNK_ID), ("pad", keys.PAD_ID))},
        "add_bos_token": value(keys.ADD_BOS),
        "add_eos_token": value(keys.ADD_EOS),
        "tensor_types": dict(sorted(Counter(tensors.values()).items())),
        "tensors": tensors,
    }


def verify_gguf(gguf_path: str | Path, model_dir: str | Path, prompts: Sequence[str], *,
                n_ctx: int = 512, extra_buffer_types: str = "off") -> dict[str, Any]:
    """Load ``gguf_path`` in llama.cpp and compare it with the Hugging Face model it came from.

    * load: llama-cpp-python ``Llama`` in a child process (:class:`LlamaProcess`, with
      ``extra_buffer_types``; raises ``RuntimeError`` naming the file if the load fails,
      ``NativeCrashError`` if llama.cpp crashes, ``ValueError`` if its ``n_vocab`` does not
      fit the model's vocabulary);
    * vocabulary: the piece text of every id the Hugging Face tokenizer has
      (``convert_ids_to_tokens``) against llama.cpp's (ids past the tokenizer are the
      ``[PADn]`` padding, counted, not compared);
    * tokenisation: ``tokenizer(prompt)`` against llama.cpp's ``tokenize(prompt,
      add_bos=True, special=True)`` (chat tokens parsed, BOS as the file says), per prompt;
    * logits: both models run the Hugging Face token ids of each prompt (so a tokenisation
      difference cannot hide or fake a weight difference); the next-token logits at every
      position give ``max_abs_logit_diff``, ``mean_abs_logit_diff`` and ``top1_agreement``
      (share of positions with the same arg-max) over ``n_positions``, and for scale
      ``hf_logit_std`` (the Hugging Face logits' spread over the vocabulary, averaged) and
      ``hf_max_abs_logit`` (their largest magnitude, which rounding errors scale with).

    LongRoPE: llama.cpp picks the long factors when ``n_ctx`` exceeds the original context,
    Hugging Face when the *sequence* does; keep ``n_ctx`` at most the original context.
    Returns a JSON-able dict.
    """
    return verify_ggufs([gguf_path], model_dir, prompts, n_ctx=n_ctx,
                        extra_buffer_types=extra_buffer_types)[0]


def verify_ggufs(gguf_paths: Sequence[str | Path], model_dir: str | Path,
                 prompts: Sequence[str], *, n_ctx: int = 512,
                 extra_buffer_types: str = "off") -> list[dict[str, Any]]:
    """:func:`verify_gguf` for several files exported from one model, in order: the
    Hugging Face model is loaded and run once, not once per file."""
    import torch

    model, tokenizer = load_base_model(model_dir, dtype=torch.float32)
    encoded = [tokenizer(prompt)["input_ids"] for prompt in prompts]
    too_long = [i for i, ids in enumerate(encoded) if not 0 < len(ids) <= n_ctx]
    if too_long:
        raise ValueError(f"prompts {too_long} are empty or longer than n_ctx={n_ctx} tokens")
    with torch.no_grad():
        hf_logits = [model(torch.tensor([ids])).logits[0].numpy() for ids in encoded]
    reference = _HFReference(Path(model_dir), model.config.vocab_size,
                             tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))),
                             list(prompts), encoded, hf_logits)
    return [_compare_with_reference(Path(path), reference, n_ctx, extra_buffer_types)
            for path in gguf_paths]


class _HFReference(NamedTuple):
    """What a GGUF is compared with: the Hugging Face side, computed once."""

    model_dir: Path
    vocab_size: int
    pieces: list[str]  # piece text of every tokenizer id
    prompts: list[str]
    encoded: list[list[int]]  # the prompts' Hugging Face token ids
    logits: list[np.ndarray]  # next-token logits [positions, vocab] per prompt


def _compare_with_reference(gguf_path: Path, reference: _HFReference, n_ctx: int,
                            extra_buffer_types: str) -> dict[str, Any]:
    n_tokenizer = len(reference.pieces)
    with LlamaProcess(gguf_path, extra_buffer_types=extra_buffer_types,
                      operation="GGUF verification", n_ctx=n_ctx, n_batch=n_ctx,
                      n_threads=_VERIFY_THREADS, n_threads_batch=_VERIFY_THREADS,
                      logits_all=True) as llm:
        n_vocab = llm.call("n_vocab")
        if n_vocab != reference.vocab_size or n_tokenizer > n_vocab:
            raise ValueError(f"{str(gguf_path)!r} has {n_vocab} tokens; the model in "
                             f"{str(reference.model_dir)!r} has vocab_size "
                             f"{reference.vocab_size} and {n_tokenizer} tokenizer ids: the "
                             "file is not its export")
        piece_mismatches = [i for i, (gguf_piece, piece) in enumerate(
            zip(llm.call("vocab_pieces", n_tokenizer), reference.pieces)) if gguf_piece != piece]
        tokenization_mismatches = []
        for index, (prompt, ids) in enumerate(zip(reference.prompts, reference.encoded)):
            gguf_ids = llm.call("tokenize", prompt)
            if gguf_ids != ids:
                tokenization_mismatches.append({"prompt": index, "hf": ids, "gguf": gguf_ids})
        diffs, agree = [], []
        for ids, hf_logits in zip(reference.encoded, reference.logits):
            gguf_logits = llm.call("eval_logits", ids)
            diffs.append(np.abs(hf_logits - gguf_logits))
            agree.append(hf_logits.argmax(-1) == gguf_logits.argmax(-1))
    diff, agreement = np.concatenate(diffs), np.concatenate(agree)
    return {
        "gguf_path": str(gguf_path),
        "n_ctx": n_ctx,
        "n_vocab": n_vocab,
        "hf_vocab_size": reference.vocab_size,
        "hf_tokenizer_size": n_tokenizer,
        "vocab_compared": f"piece text of ids 0..{n_tokenizer - 1} (every tokenizer id); "
                          f"{max(n_vocab - n_tokenizer, 0)} padding ids not compared",
        "vocab_mismatches": len(piece_mismatches),
        "vocab_match": not piece_mismatches,
        "n_prompts": len(reference.encoded),
        "tokenization_match": not tokenization_mismatches,
        "tokenization_mismatches": tokenization_mismatches,
        "n_positions": int(agreement.size),
        "max_abs_logit_diff": float(diff.max()),
        "mean_abs_logit_diff": float(diff.mean()),
        "top1_agreement": float(agreement.mean()),
        # the scale the differences are measured on
        "hf_logit_std": float(np.concatenate([logits.std(axis=-1)
                                              for logits in reference.logits]).mean()),
        "hf_max_abs_logit": float(max(np.abs(logits).max() for logits in reference.logits)),
    }


__all__ = ["GGUF_OUTTYPES", "gguf_summary", "quantize_gguf", "verify_gguf", "verify_ggufs",
           "write_gguf"]
