"""A tiny embedded base model and a small /think SFT set, shared by the loop tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from so8t_kedro.labels import LABEL_TO_ID, LABELS
from so8t_kedro.think_format import render_sample
from so8t_kedro.training.base_model import (
    embedded_base_model,
    pretrain_causal_lm,
    save_base_model,
)
from so8t_kedro.training.loop import request_text

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _seed_records(per_label: int) -> list[dict]:
    rows = [json.loads(line) for line in
            (PROJECT_ROOT / "data/01_raw/so8t_seed_dataset.jsonl").read_text().splitlines()]
    picked = []
    for label in LABELS:
        picked += [r for r in rows if r["label"] == label][:per_label]
    return picked


@pytest.fixture(scope="session")
def sft_samples() -> pd.DataFrame:
    """24 train + 8 val /think samples, balanced over the labels."""
    records = []
    for i, r in enumerate(_seed_records(8)):
        sample = render_sample(r["label"], r["domain"], r["text"], r["language"], "quadruple",
                               rng_key=r["id"])
        records.append({**sample, "id": r["id"], "split": "val" if i % 8 >= 6 else "train",
                        "format": "quadruple", "label": r["label"],
                        "label_id": LABEL_TO_ID[r["label"]], "language": r["language"],
                        "domain": r["domain"], "source": "seed"})
    return pd.DataFrame(records)


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory, sft_samples) -> Path:
    model, tokenizer = embedded_base_model(
        sft_samples["text"].tolist(),
        {"vocab_size": 1200, "hidden_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 128},
    )
    pretrain_causal_lm(model, tokenizer, [request_text(p) for p in sft_samples["prompt"]],
                       epochs=5, batch_size=8)
    out = tmp_path_factory.mktemp("tiny_base") / "model"
    save_base_model(model, tokenizer, out)
    return out


@pytest.fixture
def training_params(tmp_path) -> dict:
    """The project's training parameters, shrunk to a few CPU steps."""
    params = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_training.yml").read_text())
    params = copy.deepcopy(params["training"])
    params.update(quantization=None, epochs=2, batch_size=4, max_seq_length=512,
                  learning_rate=5e-3)
    params["lora"].update(r=4, alpha=8)
    params["checkpoint"]["dir"] = str(tmp_path / "checkpoints")
    params["progress"]["show_progress_bar"] = False
    return params
