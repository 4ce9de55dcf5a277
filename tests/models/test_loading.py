"""Tests of so8t_kedro.models.loading: saving a base and loading it, plain or quantised,
with errors that name the path."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from so8t_kedro import think as tf
from so8t_kedro.models.loading import load_base_model
from tests.helpers.embedded_base import EN_REQUEST, JA_REQUEST, UNSEEN, token_ids


def test_save_and_reload_with_stock_classes(built, saved):
    model, tokenizer = built
    assert (saved / "tokenizer.model").is_file()
    tokenizer2 = AutoTokenizer.from_pretrained(saved, local_files_only=True,
                                               trust_remote_code=False)
    model2 = AutoModelForCausalLM.from_pretrained(saved, local_files_only=True,
                                                  trust_remote_code=False)
    assert type(model2).__name__ == "Phi3ForCausalLM"
    for text in (tf.render_prompt(JA_REQUEST), tf.render_prompt(EN_REQUEST), UNSEEN):
        assert token_ids(tokenizer2, text) == token_ids(tokenizer, text)
    assert tokenizer2.decode(token_ids(tokenizer2, UNSEEN)) == UNSEEN
    assert tokenizer2.chat_template == tokenizer.chat_template
    assert tokenizer2.all_special_tokens == tokenizer.all_special_tokens
    ids = torch.tensor([token_ids(tokenizer, tf.render_prompt(JA_REQUEST))])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, model2(ids).logits)
    assert model2.generation_config.eos_token_id == model.generation_config.eos_token_id


def test_load_base_model_plain(built, saved):
    model, tokenizer = load_base_model(saved)
    assert model.dtype == torch.float32 and not model.training
    prompt = tf.render_prompt(EN_REQUEST)
    assert token_ids(tokenizer, prompt) == token_ids(built[1], prompt)
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
    ids = torch.tensor([token_ids(tokenizer, tf.render_prompt(JA_REQUEST))])
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
