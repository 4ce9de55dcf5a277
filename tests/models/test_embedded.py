"""Tests of so8t_kedro.models.embedded: the embedded tiny Phi-3 default, its tokenizer and
its pre-training recipe (tests/training/test_pretrain.py)."""

from __future__ import annotations

import pytest
import torch

from so8t_kedro import think as tf
from so8t_kedro.models.embedded import (
    CHAT_TOKENS,
    EMBEDDED_KEYS,
    MODEL_KEYS,
    STOP_TOKENS,
    THINK_TAG_TOKENS,
    build_embedded_model,
    build_embedded_tokenizer,
    embedded_base_model,
)
from so8t_kedro.parameters.training import EmbeddedParameters
from tests.helpers.embedded_base import EN_REQUEST, JA_REQUEST, UNSEEN, embedded_params, token_ids


def model_args(**overrides) -> dict:
    """``build_embedded_model``'s arguments as conf/base gives them, with ``overrides``."""
    params = embedded_params(**overrides)
    return {key: params[key] for key in (*MODEL_KEYS, "seed")}


def test_the_keys_the_builder_reads_are_the_typed_parameters_keys():
    # Two lists of one concept: the typed model checks the YAML when a run starts, the
    # framework-free builder checks what it is handed (benchmarks call it with plain dicts;
    # models/ cannot import parameters/, which imports models/). They must not drift.
    assert set(EmbeddedParameters.model_fields) == {*EMBEDDED_KEYS, "pretrain"}


# --------------------------------------------------------------------------- determinism


def test_two_builds_are_identical(corpus, built):
    model, tokenizer = built
    model2, tokenizer2 = embedded_base_model(corpus, embedded_params(placeholder_tokens=[]))
    assert tokenizer.sp_model_bytes == tokenizer2.sp_model_bytes
    assert tokenizer.get_vocab() == tokenizer2.get_vocab()
    state, state2 = model.state_dict(), model2.state_dict()
    assert state.keys() == state2.keys()
    assert all(torch.equal(state[k], state2[k]) for k in state)


def test_weights_depend_on_seed_only(built):
    model, tokenizer = built
    torch.manual_seed(123)
    again = build_embedded_model(tokenizer, **model_args(seed=0))
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    other = build_embedded_model(tokenizer, **model_args(seed=1))
    assert torch.equal(torch.rand(3), before)  # the global RNG was left alone
    embed = model.model.embed_tokens.weight
    assert torch.equal(again.model.embed_tokens.weight, embed)  # global state ignored
    assert not torch.equal(other.model.embed_tokens.weight, embed)


def test_saved_tokenizer_model_matches_build(built, saved):
    assert (saved / "tokenizer.model").read_bytes() == built[1].sp_model_bytes


# --------------------------------------------------------------------------- tokenizer


def test_default_sizes_and_special_ids(built):
    model, tokenizer = built
    assert len(tokenizer) == 4000 == model.config.vocab_size
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id) == (0, 1)
    assert tokenizer.convert_tokens_to_ids("</s>") == 2
    assert tokenizer.eos_token == tokenizer.pad_token == tf.EOS_TOKEN
    assert model.config.eos_token_id == model.config.pad_token_id == tokenizer.eos_token_id
    assert model.config.bos_token_id == 1
    assert model.generation_config.eos_token_id == [
        tokenizer.convert_tokens_to_ids(t) for t in STOP_TOKENS
    ]
    assert model.config.hidden_size % 8 == 0 and model.dtype == torch.float32


@pytest.mark.parametrize("token", CHAT_TOKENS + THINK_TAG_TOKENS)
def test_special_tokens_and_tags_are_single_ids(built, token):
    tokenizer = built[1]
    ids = tokenizer.encode(token, add_special_tokens=False)
    assert len(ids) == 1 and ids[0] != tokenizer.unk_token_id
    # Also inside running text, with no space around it.
    ids = tokenizer.encode(f"abc{token}def", add_special_tokens=False)
    assert ids.count(tokenizer.convert_tokens_to_ids(token)) == 1


def test_sentencepiece_model_alone_keeps_tags_whole(built):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=built[1].sp_model_bytes)
    for token in CHAT_TOKENS + THINK_TAG_TOKENS:
        assert sp.encode(token, out_type=str)[-1] == token
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2)


@pytest.mark.parametrize("text", [
    JA_REQUEST,
    EN_REQUEST,
    UNSEEN,
    "no leading space, two  inside,\ttab and\n\nnewlines\n  ",
    tf.render_prompt("  leading spaces after the user header\n"),
    tf.render_prompt(JA_REQUEST) + "<think-task>依頼</think-task>\n<final>判定: ALLOW\nはい</final>"
    + tf.END_TOKEN,
])
def test_round_trip_and_byte_fallback(built, text):
    tokenizer = built[1]
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


def test_unseen_characters_use_byte_pieces(built):
    tokenizer = built[1]
    pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode("😀", add_special_tokens=False))
    assert pieces and all(p.startswith("<0x") or p == "▁" for p in pieces)


def test_skip_special_tokens_keeps_think_tags(built):
    tokenizer = built[1]
    reply = "<think-task>t</think-task><final>判定: DENY\nno</final>"
    ids = tokenizer.encode(tf.ASSISTANT_TOKEN + reply + tf.END_TOKEN + tf.EOS_TOKEN,
                           add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == reply


@pytest.mark.parametrize("request_text", [JA_REQUEST, EN_REQUEST])
def test_chat_template_matches_render_prompt(built, request_text):
    tokenizer = built[1]
    messages = [{"role": "system", "content": tf.SYSTEM_PROMPT},
                {"role": "user", "content": request_text}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == tf.render_prompt(request_text)
    # No <s> is added on encoding either: the template's ids are the prompt's ids.
    assert token_ids(tokenizer, text) == tokenizer.encode(tf.render_prompt(request_text),
                                                     add_special_tokens=False)


def test_pii_placeholders_are_single_tokens(corpus):
    import sentencepiece as spm

    params = embedded_params(vocab_size=2000, hidden_size=64, intermediate_size=96)
    mapping = params["placeholder_tokens"]  # pii.placeholders: entity type -> placeholder
    model, tokenizer = embedded_base_model(corpus[:300], params)
    placeholders = list(dict.fromkeys(mapping.values()))
    assert len(placeholders) < len(mapping)  # <ACCOUNT>, <ID>: shared by several types
    sp = spm.SentencePieceProcessor(model_proto=tokenizer.sp_model_bytes)
    for placeholder in placeholders:
        text = f"私は{placeholder}です。Call {placeholder}."
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert ids.count(tokenizer.convert_tokens_to_ids(placeholder)) == 2
        assert tokenizer.decode(ids, skip_special_tokens=True) == text  # not special
        assert sp.encode(placeholder, out_type=str)[-1] == placeholder
    # The chat tokens and think tags keep their ids; the placeholders follow them.
    first = 3 + len(CHAT_TOKENS + THINK_TAG_TOKENS)
    assert tokenizer.convert_tokens_to_ids(placeholders) == list(
        range(first, first + len(placeholders)))
    assert model.config.vocab_size == len(tokenizer)


# --------------------------------------------------------------------------- model


def test_hidden_size_must_be_multiple_of_8(built):
    with pytest.raises(ValueError, match="multiple of 8"):
        build_embedded_model(built[1], **model_args(hidden_size=100, num_attention_heads=4))


def test_params_are_read_key_by_key(corpus):
    model, tokenizer = embedded_base_model(
        corpus[:300], embedded_params(vocab_size=2000, hidden_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1,
                                      intermediate_size=96, seed=3))
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.num_key_value_heads, config.vocab_size) == (64, 1, 2, 1, len(tokenizer))
    assert len(tokenizer) <= 2000


def test_a_missing_or_unknown_key_is_named(corpus):
    params = embedded_params(hiden_size=64)
    del params["hidden_size"], params["seed"]
    with pytest.raises(ValueError, match=r"missing parameter\(s\) \['hidden_size', 'seed'\]; "
                                         r"unknown parameter\(s\) \['hiden_size'\]"):
        embedded_base_model(corpus[:50], params)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['pretrain'\]"):
        embedded_base_model(corpus[:50], embedded_params(pretrain={"epochs": 1}))


def test_a_vocabulary_too_small_for_the_corpus_is_named(corpus):
    params = embedded_params()
    with pytest.raises(ValueError, match="vocab_size=600 is smaller"):
        build_embedded_tokenizer(corpus, vocab_size=600, seed=params["seed"],
                                 model_max_length=params["max_position_embeddings"],
                                 placeholder_tokens=params["placeholder_tokens"])
