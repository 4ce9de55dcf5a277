"""The export pipeline's bake and bake-verification nodes on the tiny model and adapter."""

from __future__ import annotations

import json

import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from transformers import AutoModelForCausalLM, AutoTokenizer, Phi3ForCausalLM

from so8t_kedro.models.selection import resolve_catalog_adapter
from so8t_kedro.pipelines.export import create_pipeline
from so8t_kedro.pipelines.export.nodes import ExportVerificationError, held_out_texts
from tests.helpers.catalog import PersistedMemoryDataset


def test_baked_model_is_a_stock_phi3_with_the_base_tokenizer(export_run, tiny_base_dir):
    catalog, _ = export_run
    baked_dir = catalog.load("baked_model")
    # the versioned layout <filepath>/<version>/baked_model
    assert baked_dir.name == "baked_model" and baked_dir.parent.parent.name == "baked_model"
    model = AutoModelForCausalLM.from_pretrained(baked_dir)
    assert type(model) is Phi3ForCausalLM
    assert set(model.state_dict()) == set(Phi3ForCausalLM(model.config).state_dict())
    assert not list(baked_dir.glob("so8t_*")) and not (baked_dir / "adapter_config.json").exists()
    # llama.cpp's GGUF conversion reads the SentencePiece model; Ollama/HF the chat template
    assert (baked_dir / "tokenizer.model").read_bytes() == (
        tiny_base_dir / "tokenizer.model").read_bytes()
    assert (baked_dir / "chat_template.jinja").read_text() == (
        tiny_base_dir / "chat_template.jinja").read_text()
    generation = json.loads((baked_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == json.loads(
        (tiny_base_dir / "generation_config.json").read_text())["eos_token_id"]


def test_bake_verification_holds_and_the_adapter_is_in_the_weights(export_run, tiny_base_dir,
                                                                   sft_samples):
    catalog, params = export_run
    baked_dir = catalog.load("baked_model")
    report = catalog.load("bake_verification")
    tolerance = params["bake"]["tolerance"]
    # an fp32 bake differs by float error only (about 1e-6 on this model)
    assert 0 < report["max_abs_logit_diff"] < tolerance
    assert report["top1_agreement"] == 1.0
    assert report["n_texts"] == params["verify"]["n_prompts"]
    assert report["baked_dtype"] == params["bake"]["dtype"] == "float32"
    tokenizer = AutoTokenizer.from_pretrained(baked_dir)
    texts = held_out_texts(sft_samples, params["verify"])
    lengths = [len(tokenizer(text)["input_ids"]) for text in texts]
    assert report["n_tokens"] == sum(min(n, params["verify"]["max_tokens"]) for n in lengths)
    # The baked weights are not the base's: the LoRA and the gates moved the logits.
    ids = tokenizer(texts[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(tiny_base_dir).eval()(ids).logits
        baked = AutoModelForCausalLM.from_pretrained(baked_dir).eval()(ids).logits
    assert (base - baked).abs().max().item() > 100 * tolerance


def test_verify_bake_raises_below_the_measured_difference(export_run):
    catalog, params = export_run
    measured = catalog.load("bake_verification")["max_abs_logit_diff"]
    inputs = {name: catalog.load(name) for name in (
        "thinking_sft_dataset", "baked_model", "params:export.verify")}
    inputs["export_model"] = resolve_catalog_adapter(catalog.load("embedded_base_model"),
                                                     catalog.load("so8t_adapter"),
                                                     catalog.load("params:base_model"))
    inputs["params:export.bake"] = {**params["bake"], "tolerance": measured / 2}
    rerun = DataCatalog(datasets={name: MemoryDataset(value) for name, value in inputs.items()}
                        | {"bake_verification": PersistedMemoryDataset()})
    with pytest.raises(ExportVerificationError, match=r"max \|Δlogit\| .* > export.bake"):
        SequentialRunner().run(create_pipeline().only_nodes("verify_bake"), rerun)


def test_held_out_texts_are_whole_chat_texts_of_the_split(sft_samples):
    texts = held_out_texts(sft_samples, {"split": "val", "n_prompts": 3})
    val = sft_samples[sft_samples["split"] == "val"].sort_values("id")
    assert texts == val["text"].head(3).tolist()
    assert all(t.startswith("<|system|>") and "<|assistant|>" in t for t in texts)
    with pytest.raises(ValueError, match="no 'test' samples"):
        held_out_texts(sft_samples, {"split": "test", "n_prompts": 3})
