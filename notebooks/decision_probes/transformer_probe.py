"""Exploration for issue 15, not product code: how well can the embedded base learn the
four-class decision when trained on the decision alone?

Full fine-tuning of the saved embedded base (the latest ``data/06_models/embedded_base_model``
version) on the decision probe of the latest train split (``data/03_primary``; run the
default ``kedro run`` first), cross-entropy over the four label tokens read where the product
reads them (``think.render_decision_probe``, first label token), val and test scored after
every epoch. Variants (flags): query weights zeroed at the start (every head starts by
averaging its prefix: a bag-of-tokens view), a subset of heads held at zero, dropout, token
dropout on the request, unsafe-class loss weights, the probe without the system prompt, and
distillation of the reference classifier (its cross-fitted distribution as a soft target).

    OMP_NUM_THREADS=1 python notebooks/decision_probes/transformer_probe.py --epochs 6 --zero-query

Its loop is a sketch for measuring, deliberately apart from ``training/loop.py``.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import time

import torch
import torch.nn.functional as F
import yaml
from transformers import AutoTokenizer, Phi3ForCausalLM

from so8t_kedro.decision.metrics import classification_metrics
from so8t_kedro.decision.reference_classifier import cross_fitted_scores
from so8t_kedro.labels import LABELS
from so8t_kedro.think import label_continuations, render_decision_probe
from so8t_kedro.think.format import decision_prefix

UNSAFE = [LABELS.index("DENY"), LABELS.index("REFUSE")]


def latest(pattern: str) -> str:
    return max(glob.glob(pattern))


def load_split(split: str) -> list[dict]:
    with open(latest(f"data/03_primary/four_class_{split}.jsonl/*/*"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def decision_metrics(gold, predicted) -> tuple[float, float]:
    """(macro-F1, unsafe-miss rate) of label indices, by the product's metrics (the
    evaluation's ``classification_metrics``: unsafe-miss = DENY/REFUSE decided ALLOW)."""
    scores = classification_metrics([LABELS[int(i)] for i in gold],
                                    [LABELS[int(i)] for i in predicted])
    return scores["macro_f1"], scores["unsafe_miss_rate"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--zero-query", action="store_true", help="zero the query weights first")
    p.add_argument("--zero-query-layers", type=int, nargs="*", default=None)
    p.add_argument("--pooling-heads", type=int, default=None,
                   help="zero only the first N heads' queries per layer")
    p.add_argument("--hold-query", action="store_true", help="keep the zeroed queries at zero")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--token-dropout", type=float, default=0.0)
    p.add_argument("--unsafe-weight", type=float, default=1.0)
    p.add_argument("--no-system-prompt", action="store_true")
    p.add_argument("--distill", type=float, default=0.0,
                   help="weight of the KL to the reference classifier's cross-fitted "
                        "distribution (the product's training.loss_weights.distill); the "
                        "cross-entropy on the labels gets 1 - this")
    p.add_argument("--distill-temperature", type=float, default=2.0)
    p.add_argument("--base-dir", default=None,
                   help="a saved base model folder (default: the latest embedded base)")
    return p.parse_args()


def main() -> None:
    a = parse_args()
    base = a.base_dir or latest("data/06_models/embedded_base_model/*/embedded_base_model")
    tokenizer = AutoTokenizer.from_pretrained(base)
    config = Phi3ForCausalLM.from_pretrained(base).config
    config.attention_dropout = config.resid_pdrop = config.embd_pdrop = a.dropout
    model = Phi3ForCausalLM.from_pretrained(base, config=config, dtype=torch.float32)
    q_rows = config.hidden_size
    if a.pooling_heads is not None:
        q_rows = a.pooling_heads * (config.hidden_size // config.num_attention_heads)
    if a.zero_query:
        for index, layer in enumerate(model.model.layers):
            if a.zero_query_layers is not None and index not in a.zero_query_layers:
                continue
            weight = layer.self_attn.qkv_proj.weight
            with torch.no_grad():
                weight[:q_rows] = 0
            if a.hold_query:
                keep = torch.ones_like(weight)
                keep[:q_rows] = 0
                weight.register_hook(lambda grad, keep=keep: grad * keep)

    label_ids = torch.tensor([tokenizer(label_continuations()[label],
                                        add_special_tokens=False)["input_ids"][0]
                              for label in LABELS])

    def probe(record: dict) -> str:
        if a.no_system_prompt:
            return f"<|user|>\n{record['text']}<|end|>\n<|assistant|>\n{decision_prefix()}"
        return render_decision_probe(record["text"], language=record.get("language", "ja"))

    data = {}
    for split in ("train", "val", "test"):
        rows = load_split(split)
        data[split] = ([tokenizer(probe(r), add_special_tokens=False)["input_ids"] for r in rows],
                       [LABELS.index(r["label"]) for r in rows])
    generator = torch.Generator().manual_seed(a.seed)
    torch.manual_seed(a.seed)

    def label_logits(sequences, token_dropout: float = 0.0) -> torch.Tensor:
        if token_dropout:  # drop request tokens; the template's head and tail stay
            sequences = [[t for j, t in enumerate(s) if j < 3 or j >= len(s) - 6
                          or torch.rand(1, generator=generator).item() >= token_dropout]
                         for s in sequences]
        length = max(map(len, sequences))
        ids = torch.full((len(sequences), length), tokenizer.pad_token_id)
        mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, s in enumerate(sequences):  # left padding: the probe ends at the last position
            ids[row, length - len(s):] = torch.tensor(s)
            mask[row, length - len(s):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        return logits[:, -1, label_ids]

    def evaluate(split: str) -> tuple[float, float]:
        model.eval()
        sequences, gold = data[split]
        with torch.no_grad():
            predicted = [int(i) for start in range(0, len(sequences), 64)
                         for i in label_logits(sequences[start : start + 64]).argmax(-1)]
        model.train()
        return decision_metrics(gold, predicted)

    teacher = None
    if a.distill:  # the product's teacher: the reference, cross-fitted over 5 folds
        rows = load_split("train")
        with open("conf/base/parameters_evaluation.yml", encoding="utf-8") as f:
            reference = yaml.safe_load(f)["evaluation"]["reference_classifier"]
        scores = cross_fitted_scores([r["text"] for r in rows], [r["label"] for r in rows],
                                     reference, folds=5)
        teacher = torch.softmax(torch.tensor(scores, dtype=torch.float32)
                                / a.distill_temperature, dim=-1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=a.learning_rate,
                                  weight_decay=a.weight_decay)
    sequences, gold = data["train"]
    steps = a.epochs * math.ceil(len(sequences) / a.batch_size)
    warmup = 0.05 * steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    class_weight = torch.ones(len(LABELS))
    class_weight[UNSAFE] = a.unsafe_weight
    val = evaluate("val")
    print(f"untrained: val macro-F1 {val[0]:.3f} unsafe-miss {val[1]:.3f}", flush=True)
    start = time.time()
    for epoch in range(a.epochs):
        order = torch.randperm(len(sequences), generator=generator).tolist()
        total = 0.0
        for i in range(0, len(order), a.batch_size):
            batch = order[i : i + a.batch_size]
            logits = label_logits([sequences[j] for j in batch], a.token_dropout)
            loss = F.cross_entropy(logits, torch.tensor([gold[j] for j in batch]),
                                   weight=class_weight)
            if teacher is not None:
                t = a.distill_temperature
                kl = F.kl_div(F.log_softmax(logits / t, dim=-1), teacher[batch],
                              reduction="batchmean") * t * t
                loss = (1 - a.distill) * loss + a.distill * kl
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            total += loss.item() * len(batch)
        val, test = evaluate("val"), evaluate("test")
        print(f"epoch {epoch} loss {total / len(sequences):.3f} | val macro-F1 {val[0]:.3f} "
              f"unsafe-miss {val[1]:.3f} | test macro-F1 {test[0]:.3f} unsafe-miss "
              f"{test[1]:.3f} | {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
