"""The embedded base model: a tiny default built locally.

No weights can be downloaded at run time, so the default base model is built here,
locally and deterministically (see DESIGN.md, "The embedded default"):

* ``build_embedded_tokenizer``: a SentencePiece BPE model trained on the shipped corpus,
  wrapped as a transformers ``LlamaTokenizer`` (Phi-3's own tokenizer class), carrying the
  Phi-3.5 special tokens, the /think tags and the Phi-3.5 chat template;
* ``build_embedded_model``: a tiny, seeded ``Phi3ForCausalLM`` sized to that tokenizer;
* ``embedded_base_model``: both, from ``base_model.embedded`` (conf/base/parameters_training.yml,
  where every default lives; none is repeated here).

Its pre-training (a few epochs of next-token training on the raw requests) is the training
loop's: :func:`so8t_kedro.training.pretrain.pretrain_causal_lm`.

It is saved and loaded like any base (:mod:`so8t_kedro.models.loading`).
Framework-free: transformers, sentencepiece and torch only (no Kedro).

Tokenizer choices (mirroring microsoft/Phi-3.5-mini-instruct)
-------------------------------------------------------------
* ids: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2 as in Llama / Phi-3; then the chat tokens and the
  think tags as SentencePiece user-defined symbols (one piece each, also for a plain
  SentencePiece / llama.cpp reader), then 256 byte pieces (``byte_fallback``), then BPE merges.
* ``eos_token = pad_token = "<|endoftext|>"`` and ``bos_token = "<s>"`` as in Phi-3.5's
  tokenizer and model config. ``<|end|>`` ends a turn: the model's ``generation_config``
  stops on ``<|end|>``, ``<|assistant|>`` and ``<|endoftext|>`` (Phi-3.5's
  ``generation_config.json`` lists the same three).
* ``add_bos_token=False`` (Phi-3.5's setting) and the chat template writes no ``<s>``, so
  ``render_prompt`` (which has no ``<s>``) and the template agree without changing either,
  and ``tokenizer(render_prompt(x))`` equals the template's ids.
* The chat tokens (and ``</s>``) are *special*: ``decode(..., skip_special_tokens=True)``
  drops them. The think tags are added tokens but *not* special, so decoding never loses
  them (the /think parser needs them to tell thinking from the final answer).
* Identity normalisation (no NFKC, whitespace kept as is), digits split, Metaspace with a
  prefix space on the first word only (``legacy=False``): ``decode(encode(x)) == x``,
  with one caveat shared with Phi-3.5's own tokenizer in transformers 5: a text that is
  encoded *on its own* and starts with a space loses that one space (``" a"`` encodes as
  ``▁a`` and decodes as ``"a"``). Inside a chat text (after a special token or other
  text) every space survives.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from so8t_kedro import think as tf
from so8t_kedro.models.loading import SPM_FILENAME

#: Phi-3.5's chat tokens, in Phi-3.5's id order (``<|endoftext|>`` 32000, ``<|assistant|>``
#: 32001, ``<|system|>`` 32006, ``<|end|>`` 32007, ``<|user|>`` 32010).
CHAT_TOKENS: tuple[str, ...] = (
    tf.EOS_TOKEN,
    tf.ASSISTANT_TOKEN,
    tf.SYSTEM_TOKEN,
    tf.END_TOKEN,
    tf.USER_TOKEN,
)
#: The /think tags as single tokens: opening tags, closing tags, then ``<final>``/``</final>``.
THINK_TAG_TOKENS: tuple[str, ...] = (
    *(f"<{tag}>" for tag in tf.THINK_TAGS.values()),
    *(f"</{tag}>" for tag in tf.THINK_TAGS.values()),
    tf.FINAL_OPEN,
    tf.FINAL_CLOSE,
)
UNK_TOKEN, BOS_TOKEN, LLAMA_EOS_TOKEN = "<unk>", "<s>", "</s>"
#: The tokens generation stops on (Phi-3.5's ``generation_config.eos_token_id``).
STOP_TOKENS: tuple[str, ...] = (tf.END_TOKEN, tf.ASSISTANT_TOKEN, tf.EOS_TOKEN)

#: Phi-3.5-mini-instruct's chat template, spelled with the ``think`` constants.
#: No ``<s>``: Phi-3.5 neither writes one in the template nor adds one (``add_bos_token``
#: is false), which is what ``think.render_prompt`` renders.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and message['content'] %}"
    f"{{{{'{tf.SYSTEM_TOKEN}\\n' + message['content'] + '{tf.END_TOKEN}\\n'}}}}"
    "{% elif message['role'] == 'user' %}"
    f"{{{{'{tf.USER_TOKEN}\\n' + message['content'] + '{tf.END_TOKEN}\\n'}}}}"
    "{% elif message['role'] == 'assistant' %}"
    f"{{{{'{tf.ASSISTANT_TOKEN}\\n' + message['content'] + '{tf.END_TOKEN}\\n'}}}}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    f"{{{{ '{tf.ASSISTANT_TOKEN}\\n' }}}}"
    "{% else %}"
    "{{ eos_token }}"
    "{% endif %}"
)

#: The keys of ``base_model.embedded`` passed on to :func:`build_embedded_model`.
MODEL_KEYS: tuple[str, ...] = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "max_position_embeddings",
)
#: Every key :func:`embedded_base_model` reads (``base_model.embedded`` less ``pretrain``).
EMBEDDED_KEYS: tuple[str, ...] = ("vocab_size", *MODEL_KEYS, "seed", "placeholder_tokens")

# --------------------------------------------------------------------------- tokenizer


def train_sentencepiece(corpus: Iterable[str], *, vocab_size: int, seed: int,
                        placeholder_tokens: Iterable[str] | Mapping[str, str]) -> bytes:
    """Train the SentencePiece BPE model in memory and return its serialized bytes.

    Deterministic: one thread, every sentence used in corpus order (no sampling, no
    shuffling), a fixed random seed. ``vocab_size`` is an upper bound
    (``hard_vocab_limit=False``): a small corpus gives a smaller vocabulary.
    ``placeholder_tokens`` (the PII placeholders, ``<PERSON>`` ...: a list, or
    ``pii.placeholders``' entity -> placeholder mapping, whose values count) become
    user-defined symbols after the chat tokens and think tags: one piece each, however rare
    in the corpus.
    """
    import sentencepiece as spm

    sentences = [str(text) for text in corpus if text is not None and str(text).strip()]
    if not sentences:
        raise ValueError("build_embedded_tokenizer: the corpus has no non-empty text")
    symbols = _user_defined_symbols(placeholder_tokens)
    reserved = 3 + len(symbols) + 256
    if vocab_size <= reserved:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: {reserved} ids are reserved for "
            "<unk>/<s>/</s>, the chat tokens, the think tags, the placeholders and the 256 "
            "byte pieces"
        )
    buffer = io.BytesIO()
    spm.set_random_generator_seed(int(seed))
    try:
        _train(spm, sentences, buffer, int(vocab_size), symbols)
    except RuntimeError as error:
        if "Vocabulary size is smaller than required_chars" in str(error):
            raise ValueError(
                f"vocab_size={vocab_size} is smaller than the number of characters the corpus "
                f"needs at character_coverage=0.9995 (SentencePiece: {error}); raise vocab_size"
            ) from error
        raise
    return buffer.getvalue()


def _user_defined_symbols(placeholder_tokens: Iterable[str] | Mapping[str, str]) -> list[str]:
    """The chat tokens, the think tags, then each placeholder once (several PII types share
    one placeholder, e.g. ``<ACCOUNT>``), in their first order."""
    if isinstance(placeholder_tokens, Mapping):
        placeholder_tokens = placeholder_tokens.values()
    fixed = CHAT_TOKENS + THINK_TAG_TOKENS
    return [*fixed, *(t for t in dict.fromkeys(map(str, placeholder_tokens)) if t not in fixed)]


def _train(spm, sentences: list[str], buffer: io.BytesIO, vocab_size: int,
           symbols: list[str]) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=buffer,
        model_type="bpe",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=0.9995,
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        unk_piece=UNK_TOKEN,
        bos_piece=BOS_TOKEN,
        eos_piece=LLAMA_EOS_TOKEN,
        user_defined_symbols=symbols,
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        max_sentence_length=1 << 20,
        minloglevel=2,
    )


def _spm_cache_dir(model_bytes: bytes) -> Path:
    """A content-addressed folder holding ``tokenizer.model`` (the tokenizer's
    ``vocab_file`` must stay a real file so that it can be copied on save)."""
    digest = hashlib.sha256(model_bytes).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / "so8t_embedded_spm" / digest
    target = folder / SPM_FILENAME
    if not (target.is_file() and target.read_bytes() == model_bytes):
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{SPM_FILENAME}.{os.getpid()}"
        partial.write_bytes(model_bytes)
        os.replace(partial, target)
    return folder


def build_embedded_tokenizer(
    corpus: Iterable[str],
    *,
    vocab_size: int,
    seed: int,
    model_max_length: int,
    placeholder_tokens: Iterable[str] | Mapping[str, str],
):
    """Train a SentencePiece BPE tokenizer on ``corpus`` and wrap it as Phi-3.5's tokenizer.

    Returns a transformers ``LlamaTokenizer`` (tokenizers backend) with the Phi-3.5 special
    tokens, the think tags and ``placeholder_tokens`` as single tokens (the tags and
    placeholders are not special: decoding keeps them), byte fallback and
    ``CHAT_TEMPLATE``. The same
    corpus and parameters give a byte-identical ``tokenizer.model``. The serialized
    SentencePiece model is kept as ``tokenizer.sp_model_bytes`` and ``tokenizer.vocab_file``.
    See the module docstring for the eos / pad / bos choices.
    """
    from transformers import LlamaTokenizer

    model_bytes = train_sentencepiece(corpus, vocab_size=vocab_size, seed=seed,
                                      placeholder_tokens=placeholder_tokens)
    folder = _spm_cache_dir(model_bytes)
    tokenizer = LlamaTokenizer.from_pretrained(
        str(folder),
        local_files_only=True,
        legacy=False,
        add_bos_token=False,
        add_eos_token=False,
        bos_token=BOS_TOKEN,
        eos_token=tf.EOS_TOKEN,
        pad_token=tf.EOS_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=int(model_max_length),
        chat_template=CHAT_TEMPLATE,
    )
    # The SentencePiece extractor marks every user-defined symbol "extra special"; keep that
    # for the chat tokens only, so skip_special_tokens never drops a think tag.
    tokenizer.add_special_tokens(
        {"extra_special_tokens": [LLAMA_EOS_TOKEN, *CHAT_TOKENS]},
        replace_extra_special_tokens=True,
    )
    tokenizer.sp_model_bytes = model_bytes
    _check_token_ids(tokenizer)
    return tokenizer


def _check_token_ids(tokenizer) -> None:
    expected = {UNK_TOKEN: 0, BOS_TOKEN: 1, LLAMA_EOS_TOKEN: 2}
    for offset, token in enumerate(CHAT_TOKENS + THINK_TAG_TOKENS):
        expected[token] = 3 + offset
    got = {token: tokenizer.convert_tokens_to_ids(token) for token in expected}
    if got != expected or len(tokenizer) != tokenizer.vocab_size:
        raise RuntimeError(f"embedded tokenizer: unexpected special-token ids {got}")


# --------------------------------------------------------------------------- model


def build_embedded_model(
    tokenizer,
    *,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    intermediate_size: int,
    max_position_embeddings: int,
    seed: int,
):
    """A tiny fp32 ``Phi3ForCausalLM`` for ``tokenizer``, initialised from ``seed``.

    Vocabulary = ``len(tokenizer)``; bos / eos / pad ids from the tokenizer; generation
    stops on ``STOP_TOKENS``. ``hidden_size`` must be a multiple of 8 (the SO8T gate works
    on 8-dim blocks) and of ``num_attention_heads``; ``intermediate_size`` a multiple of 64
    suits bitsandbytes' AVX512-BF16 4-bit CPU kernel. The global torch RNG is left untouched.
    """
    from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM

    if hidden_size <= 0 or hidden_size % 8:
        raise ValueError(f"hidden_size must be a positive multiple of 8, got {hidden_size}")
    if hidden_size % num_attention_heads:
        raise ValueError(f"hidden_size={hidden_size} is not divisible by "
                         f"num_attention_heads={num_attention_heads}")
    if num_attention_heads % num_key_value_heads:
        raise ValueError(f"num_attention_heads={num_attention_heads} is not a multiple of "
                         f"num_key_value_heads={num_key_value_heads}")
    config = Phi3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        original_max_position_embeddings=max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        sliding_window=None,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = Phi3ForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.convert_tokens_to_ids(t) for t in STOP_TOKENS],
        pad_token_id=tokenizer.pad_token_id,
    )
    model.eval()
    return model


def embedded_base_model(corpus: Iterable[str], params: Mapping[str, Any]):
    """``(model, tokenizer)``: the embedded default built from ``params``, the complete
    ``base_model.embedded`` mapping less ``pretrain`` (as the training node passes it).

    Reads ``EMBEDDED_KEYS``: ``vocab_size``, ``placeholder_tokens`` (the PII placeholders: a
    list, or ``pii.placeholders``' entity -> placeholder mapping, whose values count) and
    ``seed`` for the tokenizer, the ``build_embedded_model`` arguments (``MODEL_KEYS``) and
    ``seed`` for the model. A missing or an unknown key raises a ``ValueError`` naming it.
    """
    missing = [key for key in EMBEDDED_KEYS if key not in params]
    unknown = sorted(set(params) - set(EMBEDDED_KEYS))
    if missing or unknown:
        problems = [f"{what} parameter(s) {keys}" for what, keys in
                    (("missing", missing), ("unknown", unknown)) if keys]
        raise ValueError(f"base_model.embedded: {'; '.join(problems)} (embedded_base_model "
                         f"reads {list(EMBEDDED_KEYS)})")

    tokenizer = build_embedded_tokenizer(
        corpus,
        vocab_size=params["vocab_size"],
        seed=params["seed"],
        model_max_length=params["max_position_embeddings"],
        placeholder_tokens=params["placeholder_tokens"],
    )
    model = build_embedded_model(tokenizer, seed=params["seed"],
                                 **{key: params[key] for key in MODEL_KEYS})
    return model, tokenizer


__all__ = [
    "CHAT_TEMPLATE",
    "CHAT_TOKENS",
    "EMBEDDED_KEYS",
    "MODEL_KEYS",
    "STOP_TOKENS",
    "THINK_TAG_TOKENS",
    "build_embedded_model",
    "build_embedded_tokenizer",
    "embedded_base_model",
    "train_sentencepiece",
]
