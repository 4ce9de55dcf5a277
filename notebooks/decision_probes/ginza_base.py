"""Exploration for issue 15, not product code: the embedded base rebuilt with its token
embeddings started from GiNZA's word vectors (see ``bag_of_tokens_probe.ginza_vectors``),
then pre-trained as the product pre-trains it, saved to ``--out`` for
``transformer_probe.py --base-dir``.

    python notebooks/decision_probes/ginza_base.py --out /tmp/ginza_base
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).parent))
from bag_of_tokens_probe import ginza_vectors
from transformer_probe import latest, load_split

from so8t_kedro.models.embedded import MODEL_KEYS, build_embedded_model
from so8t_kedro.models.loading import save_base_model
from so8t_kedro.training.pretrain import pretrain_causal_lm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    a = p.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(
        latest("data/06_models/embedded_base_model/*/embedded_base_model"))
    conf = Path(__file__).resolve().parents[2] / "conf/base/parameters_training.yml"
    embedded = yaml.safe_load(conf.read_text())["base_model"]["embedded"]
    model = build_embedded_model(tokenizer, seed=embedded["seed"],
                                 **{key: embedded[key] for key in MODEL_KEYS})
    vectors, found = ginza_vectors(tokenizer)
    centred = vectors[found] - vectors[found].mean(0)
    hidden = model.config.hidden_size
    projected = centred @ np.linalg.svd(centred, full_matrices=False)[2][:hidden].T
    weight = model.model.embed_tokens.weight
    with torch.no_grad():
        weight[torch.from_numpy(np.flatnonzero(found))] = (
            torch.from_numpy(projected).float() * (weight.std() / projected.std()))
    print(f"{found.sum()} of {len(found)} token embeddings from GiNZA's vectors", flush=True)
    pretrain_causal_lm(model, tokenizer, [r["text"] for r in load_split("train")],
                       seed=embedded["seed"], **embedded["pretrain"])
    save_base_model(model, tokenizer, a.out)


if __name__ == "__main__":
    main()
