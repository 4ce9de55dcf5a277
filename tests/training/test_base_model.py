"""Tests of so8t_kedro.training.base_model: the embedded tiny Phi-3 default and the loader."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from so8t_kedro import think as tf
from so8t_kedro.training.base_model import (
    CHAT_TOKENS,
    STOP_TOKENS,
    THINK_TAG_TOKENS,
    build_embedded_model,
    build_embedded_tokenizer,
    embedded_base_model,
    load_base_model,
    save_base_model,
    training_params_for,
)
from tests.helpers.phrase_bank import PHRASE_BANK

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SEED_DATA = PROJECT_ROOT / "data/01_raw/so8t_seed_dataset.jsonl"
JA_REQUEST = "日本で一番高い山と、二番目に高い山を教えてください。"
EN_REQUEST = "How do I make a simple tomato pasta sauce for two people?"
# Characters absent from the corpus: must come back through byte fallback, never <unk>.
UNSEEN = "絵文字 😀🦜 と珍しい漢字 龘齉 ✓ — naïve café ﷺ"


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    rows = [json.loads(line) for line in SEED_DATA.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    texts = [row["text"] for row in rows]
    samples = [
        tf.render_sample(PHRASE_BANK, row["label"], row.get("domain"), row["text"], row["language"],
                         rng_key=row["id"])["text"]
        for row in rows[::5]
    ]
    return texts + samples


@pytest.fixture(scope="module")
def built(corpus):
    model, tokenizer = embedded_base_model(corpus, {"seed": 0})
    return model, tokenizer


@pytest.fixture(scope="module")
def saved(built, tmp_path_factory) -> Path:
    model, tokenizer = built
    return save_base_model(model, tokenizer, tmp_path_factory.mktemp("base") / "tiny")


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=True)["input_ids"]


# --------------------------------------------------------------------------- determinism


def test_two_builds_are_identical(corpus, built):
    model, tokenizer = built
    model2, tokenizer2 = embedded_base_model(corpus, {"seed": 0})
    assert tokenizer.sp_model_bytes == tokenizer2.sp_model_bytes
    assert tokenizer.get_vocab() == tokenizer2.get_vocab()
    state, state2 = model.state_dict(), model2.state_dict()
    assert state.keys() == state2.keys()
    assert all(torch.equal(state[k], state2[k]) for k in state)


def test_weights_depend_on_seed_only(built):
    model, tokenizer = built
    torch.manual_seed(123)
    again = build_embedded_model(tokenizer, seed=0)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    other = build_embedded_model(tokenizer, seed=1)
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
    assert _ids(tokenizer, text) == tokenizer.encode(tf.render_prompt(request_text),
                                                     add_special_tokens=False)


def test_pii_placeholders_are_single_tokens(corpus):
    import sentencepiece as spm

    conf = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_pii.yml").read_text("utf-8"))
    mapping = conf["pii"]["placeholders"]  # entity type -> placeholder, some shared
    model, tokenizer = embedded_base_model(
        corpus[:300], {"vocab_size": 2000, "hidden_size": 64, "intermediate_size": 96,
                       "placeholder_tokens": mapping})
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
        build_embedded_model(built[1], hidden_size=100, num_attention_heads=4)


def test_params_dict_aliases_and_unknown_keys(corpus):
    model, tokenizer = embedded_base_model(
        corpus[:300], {"vocab_size": 2000, "hidden_size": 64, "layers": 1, "heads": 2,
                       "kv_heads": 1, "intermediate_size": 96, "seed": 3})
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.num_key_value_heads, config.vocab_size) == (64, 1, 2, 1, len(tokenizer))
    assert len(tokenizer) <= 2000
    with pytest.raises(ValueError, match="unknown parameter"):
        embedded_base_model(corpus[:50], {"hiden_size": 64})
    with pytest.raises(ValueError, match="vocab_size=600 is smaller"):
        build_embedded_tokenizer(corpus, vocab_size=600)


# --------------------------------------------------------------------------- save / load


def test_save_and_reload_with_stock_classes(built, saved):
    model, tokenizer = built
    assert (saved / "tokenizer.model").is_file()
    tokenizer2 = AutoTokenizer.from_pretrained(saved, local_files_only=True,
                                               trust_remote_code=False)
    model2 = AutoModelForCausalLM.from_pretrained(saved, local_files_only=True,
                                                  trust_remote_code=False)
    assert type(model2).__name__ == "Phi3ForCausalLM"
    for text in (tf.render_prompt(JA_REQUEST), tf.render_prompt(EN_REQUEST), UNSEEN):
        assert _ids(tokenizer2, text) == _ids(tokenizer, text)
    assert tokenizer2.decode(_ids(tokenizer2, UNSEEN)) == UNSEEN
    assert tokenizer2.chat_template == tokenizer.chat_template
    assert tokenizer2.all_special_tokens == tokenizer.all_special_tokens
    ids = torch.tensor([_ids(tokenizer, tf.render_prompt(JA_REQUEST))])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, model2(ids).logits)
    assert model2.generation_config.eos_token_id == model.generation_config.eos_token_id


def test_load_base_model_plain(built, saved):
    model, tokenizer = load_base_model(saved)
    assert model.dtype == torch.float32 and not model.training
    prompt = tf.render_prompt(EN_REQUEST)
    assert _ids(tokenizer, prompt) == _ids(built[1], prompt)
    model_bf16, _ = load_base_model(str(saved), dtype="bfloat16")
    assert model_bf16.dtype == torch.bfloat16


@pytest.mark.parametrize("mode,layer", [("8bit", "Linear8bitLt"), ("4bit", "Linear4bit")])
def test_load_base_model_quantized_on_cpu(built, saved, mode, layer):
    model, tokenizer = load_base_model(saved, quantization=mode)
    qkv = model.model.layers[0].self_attn.qkv_proj
    assert type(qkv).__name__ == layer
    if mode == "4bit":
        assert qkv.weight.quant_state.nested  # double quantisation
        assert qkv.weight.quant_type == "nf4"
    ids = torch.tensor([_ids(tokenizer, tf.render_prompt(JA_REQUEST))])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


def test_missing_path_names_it(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model.*does not exist"):
        load_base_model(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*no config.json"):
        load_base_model(empty)


def test_non_phi3_model_is_refused(tmp_path):
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)
    path = tmp_path / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(path)
    with pytest.raises(ValueError, match=r"tiny-llama.*not a Phi-3.*'llama'.*LlamaForCausalLM"):
        load_base_model(path)


def test_bad_quantization_mode(saved):
    with pytest.raises(ValueError, match="quantization must be one of"):
        load_base_model(saved, quantization="3bit")


def test_the_embedded_default_trains_with_its_own_recipe():
    training = {"quantization": "8bit", "learning_rate": 2e-3, "epochs": 2,
                "lora": {"r": 64, "modules_to_save": None},
                "loss_weights": {"cmd": 0.9, "safety": 0.1, "orthogonal_reg": 0.01}}
    recipe = {"quantization": None, "epochs": 4, "lora": {"modules_to_save": ["lm_head"]},
              "loss_weights": {"safety": 1.0}}
    embedded = training_params_for({"path": None, "embedded_training": recipe}, training)
    assert embedded == {"quantization": None, "learning_rate": 2e-3, "epochs": 4,
                        "lora": {"r": 64, "modules_to_save": ["lm_head"]},
                        "loss_weights": {"cmd": 0.9, "safety": 1.0, "orthogonal_reg": 0.01}}
    assert training["quantization"] == "8bit"  # the caller's dict is not changed
    # A real model (Borea) keeps params:training, QLoRA included.
    real = training_params_for({"path": "D:/models/Borea", "embedded_training": recipe}, training)
    assert real == training
    with pytest.raises(KeyError, match=r"embedded_training\.lora\.rank"):
        training_params_for({"path": None, "embedded_training": {"lora": {"rank": 8}}}, training)


def test_the_embedded_base_sees_the_train_split_only(sft_samples):
    """The tokenizer is trained on train rows only: a string repeated in the val rows
    alone (their texts and requests) never becomes a piece. (Pre-training reads the
    requests of the same train rows.)"""
    from so8t_kedro.pipelines.training.nodes import build_embedded_base_model

    marker = "ZQXJWV"
    samples = sft_samples.copy()
    val = samples["split"] == "val"
    samples.loc[val, "text"] = samples.loc[val, "text"] + f" {marker}" * 50
    samples.loc[val, "prompt"] = samples.loc[val, "prompt"].str.replace(
        "<|end|>\n<|assistant|>", f"{marker * 20}<|end|>\n<|assistant|>", regex=False)
    assert samples.loc[val, "prompt"].str.contains(marker).all()
    params = {"vocab_size": 1200, "hidden_size": 64, "intermediate_size": 96,
              "pretrain": {"epochs": 1, "learning_rate": 3e-3, "batch_size": 8}}
    tokenizer = build_embedded_base_model(samples, params).tokenizer
    assert not any("ZQ" in piece or "XJ" in piece for piece in tokenizer.get_vocab())
