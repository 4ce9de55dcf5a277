"""Exploration for issue 15, not product code: the ceiling of a bag-of-tokens classifier
trained by gradient descent on the embedded tokenizer's tokens (fastText: the mean of token
embeddings, then a linear layer), optionally with hashed token bigrams and with token
embeddings started from GiNZA's Japanese word vectors (``ja_ginza``'s 300-d vectors, a
word's own or its characters' mean, projected to 128 dimensions by PCA).

If this lands at the reference classifier, a transformer that learns a bag-of-tokens
decision from the same 2,509 requests has no more to gain from the bag alone.

    python notebooks/decision_probes/bag_of_tokens_probe.py
    python notebooks/decision_probes/bag_of_tokens_probe.py --bigram-buckets 20000 --ginza-vectors
    python notebooks/decision_probes/bag_of_tokens_probe.py --tokenizer-corpus requests

``--tokenizer-corpus requests`` swaps the embedded tokenizer (trained on the train split's
SFT texts, whose template phrases take many of its pieces) for one built the same way
(``build_embedded_tokenizer``, ``base_model.embedded``'s vocabulary size and placeholders)
from the train split's requests alone: does a bag of request-word pieces decide better?
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).parent))
from transformer_probe import decision_metrics, latest, load_split

from so8t_kedro.labels import LABELS


def ginza_vectors(tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Per token id: a 300-d vector and whether one was found (the token's word, else the
    mean of its characters' vectors)."""
    import spacy

    vocab = spacy.load("ja_ginza").vocab
    vectors = np.zeros((len(tokenizer), 300), np.float32)
    found = np.zeros(len(tokenizer), bool)
    for i in range(len(tokenizer)):
        piece = tokenizer.convert_ids_to_tokens(i).replace("\u2581", "")
        chars = [vocab[c].vector for c in piece if vocab[c].has_vector]
        if piece and vocab[piece].has_vector:
            vectors[i], found[i] = vocab[piece].vector, True
        elif chars:
            vectors[i], found[i] = np.mean(chars, 0), True
    return vectors, found


def requests_tokenizer(requests: list[str]):
    """The embedded tokenizer built from ``requests`` instead of the SFT texts."""
    sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
    from seed_samples import project_parameters

    from so8t_kedro.models.embedded import build_embedded_tokenizer

    embedded = project_parameters()["base_model"]["embedded"]
    return build_embedded_tokenizer(requests, vocab_size=embedded["vocab_size"],
                                    seed=embedded["seed"],
                                    model_max_length=embedded["max_position_embeddings"],
                                    placeholder_tokens=embedded["placeholder_tokens"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bigram-buckets", type=int, default=0)
    p.add_argument("--ginza-vectors", action="store_true")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--tokenizer-corpus", choices=["sft", "requests"], default="sft")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.tokenizer_corpus == "requests":
        tokenizer = requests_tokenizer([r["text"] for r in load_split("train")])
    else:
        tokenizer = AutoTokenizer.from_pretrained(
            latest("data/06_models/embedded_base_model/*/embedded_base_model"))
    print(f"tokens per train request: {np.mean([len(tokenizer(r['text'], add_special_tokens=False)['input_ids']) for r in load_split('train')]):.1f}")
    vocab = len(tokenizer)

    def features(text: str) -> list[int]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if a.bigram_buckets:
            ids += [vocab + (x * 7919 + y) % a.bigram_buckets 
                    for x, y in itertools.pairwise(ids)]
        return ids

    data = {}
    for split in ("train", "val", "test"):
        rows = load_split(split)
        data[split] = ([features(r["text"]) for r in rows], [LABELS.index(r["label"]) for r in rows])
    if a.ginza_vectors:
        vectors, found = ginza_vectors(tokenizer)
        centred = vectors[found] - vectors[found].mean(0)
        projected = centred @ np.linalg.svd(centred, full_matrices=False)[2][:128].T

    def bag(lists):
        flat = torch.tensor([t for ids in lists for t in ids])
        offsets = torch.tensor([0, *np.cumsum([len(ids) for ids in lists])[:-1]])
        return flat, offsets

    for seed in a.seeds:
        torch.manual_seed(seed)
        embedding = nn.EmbeddingBag(vocab + a.bigram_buckets, 128, mode="mean")
        head = nn.Linear(128, len(LABELS))
        if a.ginza_vectors:
            with torch.no_grad():
                scale = embedding.weight.std() / projected.std()
                embedding.weight[torch.from_numpy(np.flatnonzero(found))] = \
                    torch.from_numpy(projected).float() * scale
        optimizer = torch.optim.AdamW([*embedding.parameters(), *head.parameters()], lr=3e-3,
                                      weight_decay=0.01)
        sequences, gold = data["train"]
        for epoch in range(a.epochs):
            order = torch.randperm(len(sequences)).tolist()
            for i in range(0, len(order), 16):
                batch = order[i : i + 16]
                logits = head(embedding(*bag([sequences[j] for j in batch])))
                F.cross_entropy(logits, torch.tensor([gold[j] for j in batch])).backward()
                optimizer.step()
                optimizer.zero_grad()
            if epoch % 3 == 2:
                with torch.no_grad():
                    scores = {s: decision_metrics(data[s][1],
                                                  head(embedding(*bag(data[s][0]))).argmax(-1))
                              for s in ("val", "test")}
                print(f"seed {seed} epoch {epoch} | val macro-F1 {scores['val'][0]:.3f} "
                      f"unsafe-miss {scores['val'][1]:.3f} | test macro-F1 {scores['test'][0]:.3f} "
                      f"unsafe-miss {scores['test'][1]:.3f}", flush=True)


if __name__ == "__main__":
    main()
