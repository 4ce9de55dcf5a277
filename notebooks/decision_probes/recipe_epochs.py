"""The product's embedded recipe, trained as the training node trains it, with the validation
and test splits scored after every epoch (exploration, not product code).

`benchmarks/decision_seeds.py` gives the figure a recipe ends with; this gives the curve on
the way there, on both held-out splits, so that a change is judged on validation and
test together (628 requests, not one split of 314) and on the same seed as its baseline.

    OMP_NUM_THREADS=1 python notebooks/decision_probes/recipe_epochs.py --seed 42
    OMP_NUM_THREADS=1 python notebooks/decision_probes/recipe_epochs.py --seed 42 \
        --params base_model.embedded_training.loss_weights.cmd=0.1
    ... --query-scale 0.3          # queries scaled, not zeroed, by uniform_attention_start
    ... --uniform-layers 1         # only layer 1's queries zeroed (layer 0 keeps its own)
    ... --previous-token-heads 0 1 # layer 0's heads 0 and 1 start looking one token back
    ... --augment 3                # 3 perturbed copies of each train request, teacher-labelled
    ... --lemma-teacher            # distil from teacher_variants.char_and_lemma_teacher

Reads the catalog's `thinking_sft_dataset` and train/val/test records (run
`kedro run --pipelines=data_processing,thinking_sft` first). The embedded base is built by
the training pipeline's node and cached under `--work-dir` by its parameters. Each epoch's
label scores go to `<work-dir>/<tag>_<seed>.npz` (`val_<epoch>`, `test_<epoch>`).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

import numpy as np
import pandas as pd
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=42, help="training.seed")
    parser.add_argument("--params", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides as `kedro run --params` takes them")
    parser.add_argument("--query-scale", type=float, default=0.0,
                        help="what uniform_attention_start multiplies the query rows by "
                             "(the product: 0)")
    parser.add_argument("--uniform-layers", type=int, nargs="*", default=None,
                        help="the layers whose queries it scales (the product: all)")
    parser.add_argument("--previous-token-heads", type=int, nargs="*", default=[],
                        metavar="HEAD", help="layer-0 heads started as previous-token heads "
                                             "(see patch_previous_token_start)")
    parser.add_argument("--augment", type=int, default=0, metavar="N",
                        help="N perturbed copies of each train request as decision-only rows, "
                             "soft-labelled by the reference fitted without the original "
                             "(see augmented_rows)")
    parser.add_argument("--lemma-teacher", action="store_true",
                        help="the distillation's soft targets from teacher_variants' "
                             "char_and_lemma_teacher, cross-fitted, instead of the reference")
    parser.add_argument("--tag", default="recipe", help="name of the scores file")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/recipe_epochs"))
    return parser.parse_args()


def patch_uniform_start(scale: float, layers: list[int] | None) -> None:
    """Replace the loop's ``zero_query_weights`` (called by ``add_adapters``) with one that
    scales the query rows of the chosen layers by ``scale``."""
    from so8t_kedro.training import loop

    def scale_queries(model) -> None:
        config = model.config
        rows = config.num_attention_heads * (config.hidden_size // config.num_attention_heads)
        for name, module in model.named_modules():
            chosen = layers is None or any(f"layers.{i}." in name for i in layers)
            if name.endswith("qkv_proj.modules_to_save.default") and chosen:
                with torch.no_grad():
                    module.weight[:rows] *= scale

    loop.zero_query_weights = scale_queries


def patch_previous_token_start(heads: list[int], pairs: int = 8, sharpness: float = 10.0) -> None:
    """After the loop's uniform start, make layer 0's ``heads`` look one token back, so that
    layer 1's uniform heads average token pairs (a bag of bigrams) instead of single tokens.

    Phi-3's projections have no bias, so one embedding coordinate (the one of least variance)
    is set to a constant for every token; the heads' queries and keys read only it, on the
    ``pairs`` fastest rotary frequencies, the query turned back by one position's angle:
    the score of key n from query m is then ``sum_i cos(theta_i * (m - n - 1))``, largest
    one token back. ``sharpness`` scales the scores (10: about 0.6 of the weight one back,
    0.2 on the token itself and two back)."""
    import math

    from so8t_kedro.training import loop

    uniform_start = loop.zero_query_weights

    def previous_token_start(model) -> None:
        uniform_start(model)
        config = model.config
        n_heads = config.num_attention_heads
        assert config.num_key_value_heads == n_heads, "one key head per query head assumed"
        head_dim = config.hidden_size // n_heads
        half = head_dim // 2
        theta = config.rope_parameters["rope_theta"]
        freqs = theta ** (-2 * torch.arange(half, dtype=torch.float64) / head_dim)
        modules = dict(model.named_modules())

        def module(suffix: str):
            return next(m for name, m in modules.items() if name.endswith(suffix))

        with torch.no_grad():
            embeddings = module("embed_tokens.modules_to_save.default").weight
            j = int(embeddings.var(0).argmin())
            embeddings[:, j] = embeddings.pow(2).mean().sqrt()
            x_j = module("layers.0.input_layernorm")(embeddings)[:, j].abs().mean().item()
            scale = math.sqrt(sharpness * math.sqrt(head_dim)) / x_j
            qkv = module("layers.0.self_attn.qkv_proj.modules_to_save.default").weight
            for head in heads:
                query, key = head * head_dim, (n_heads + head) * head_dim
                qkv[query:query + head_dim] = 0
                qkv[key:key + head_dim] = 0
                for i in range(pairs):
                    qkv[query + i, j] = scale * math.cos(freqs[i])
                    qkv[query + half + i, j] = -scale * math.sin(freqs[i])
                    qkv[key + i, j] = scale

    loop.zero_query_weights = previous_token_start


def perturb(text: str, language: str, rng: np.random.Generator) -> str:
    """One perturbed copy of a request: a span deleted, a window kept, or units dropped
    (characters for Japanese, words for English), as in Tang et al. 2019's transfer sets."""
    units = text.split() if language == "en" else list(text)
    joiner = " " if language == "en" else ""
    n = len(units)
    if n < 4:
        return text
    op = rng.integers(3)
    if op == 0:
        length = max(1, int(n * rng.uniform(0.1, 0.3)))
        start = int(rng.integers(0, n - length + 1))
        kept = units[:start] + units[start + length:]
    elif op == 1:
        length = max(2, int(n * rng.uniform(0.5, 0.9)))
        start = int(rng.integers(0, n - length + 1))
        kept = units[start:start + length]
    else:
        kept = [u for u in units if rng.random() >= 0.15] or units
    return joiner.join(kept)


def augmented_rows(train_records, copies: int, reference_params, folds: int, seed: int):
    """``copies`` perturbed copies of every train request as SFT rows with an empty
    completion (only the decision terms see them), each with the logits of the reference
    fitted on the cross-fitting folds that left its original out."""
    from so8t_kedro.decision.reference_classifier import cross_fits, reference_scores
    from so8t_kedro.labels import LABEL_TO_ID
    from so8t_kedro.think.format import render_prompt

    rng = np.random.default_rng(seed)
    rows = []
    for teacher, fold_rows in cross_fits(train_records["text"], train_records["label"],
                                         reference_params, folds):
        for i in fold_rows:
            record = train_records.iloc[i]
            variants = [perturb(record["text"], record["language"], rng) for _ in range(copies)]
            for k, (variant, logits) in enumerate(zip(variants,
                                                      reference_scores(teacher, variants))):
                rows.append({"id": f"{record['id']}#aug{k}", "split": "train",
                             "prompt": render_prompt(variant, record["language"]),
                             "completion": "", "label": record["label"],
                             "label_id": LABEL_TO_ID[record["label"]],
                             "language": record["language"],
                             "reference_scores": logits.tolist()})
    return pd.DataFrame(rows)


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore")
    from decision_seeds import runtime_params
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from sklearn.metrics import f1_score

    from so8t_kedro.decision.classifier import FourClassScorer
    from so8t_kedro.decision.metrics import unsafe_miss_rate
    from so8t_kedro.decision.scoring import score_requests
    from so8t_kedro.labels import LABELS
    from so8t_kedro.models.selection import training_params_for
    from so8t_kedro.pipelines.training.nodes import (
        attach_reference_scores,
        build_embedded_base_model,
    )
    from so8t_kedro.training.loop import batches_per_epoch, train_so8t

    if args.query_scale or args.uniform_layers is not None:
        patch_uniform_start(args.query_scale, args.uniform_layers)
    if args.previous_token_heads:
        patch_previous_token_start(args.previous_token_heads)
    bootstrap_project(PROJECT_ROOT)
    with KedroSession.create(project_path=PROJECT_ROOT,
                             runtime_params=runtime_params(args.params)) as session:
        context = session.load_context()
        params, catalog = context.params, context.catalog
        sft = catalog.load("thinking_sft_dataset")
        train_records = catalog.load("train_records")
        held_out = {"val": catalog.load("val_records"), "test": catalog.load("test_records")}

    embedded = params["base_model"]["embedded"]
    key = hashlib.sha1(json.dumps(embedded, sort_keys=True, default=str).encode()).hexdigest()
    base_dir = args.work_dir / f"base_{key[:10]}"
    if not base_dir.exists():
        build_embedded_base_model(sft, embedded).save_pretrained(base_dir)
    samples = attach_reference_scores(sft, train_records,
                                      params["evaluation"]["reference_classifier"],
                                      params["training"]["distillation"])
    if args.lemma_teacher:
        from teacher_variants import char_and_lemma_teacher, cross_fitted_teacher_scores

        reference = params["evaluation"]["reference_classifier"]
        scores_by_id = dict(zip(train_records["id"], cross_fitted_teacher_scores(
            char_and_lemma_teacher(reference), train_records["text"].tolist(),
            train_records["label"].tolist(), int(params["training"]["distillation"]["folds"]),
            int(reference["seed"])).tolist(), strict=True))
        train_rows = samples["split"] == "train"
        samples.loc[train_rows, "reference_scores"] = pd.Series(
            [scores_by_id[i] for i in samples.loc[train_rows, "id"]],
            index=samples.index[train_rows], dtype=object)
    if args.augment:
        extra = augmented_rows(train_records, args.augment,
                               params["evaluation"]["reference_classifier"],
                               int(params["training"]["distillation"]["folds"]), args.seed)
        extra["format"] = sft["format"].iloc[0]
        samples = pd.concat([samples, extra], ignore_index=True)
        print(f"[{args.tag}] {len(extra)} augmented decision-only rows", flush=True)
    training = copy.deepcopy(training_params_for(params["base_model"], params["training"]))
    training["seed"] = args.seed
    training["checkpoint"]["dir"] = str(args.work_dir / f"checkpoints_{args.tag}_{args.seed}")
    training["progress"]["show_progress_bar"] = False
    fmt = str(sft["format"].iloc[0])
    _, steps_per_epoch = batches_per_epoch(int((samples["split"] == "train").sum()),
                                           training["batch_size"],
                                           training["gradient_accumulation_steps"])
    scores: dict[str, np.ndarray] = {}

    def on_step(report) -> None:
        if report.step % steps_per_epoch:
            return
        epoch = report.step // steps_per_epoch
        scorer = FourClassScorer(report.tokenizer, fmt=fmt,
                                 max_probe_tokens=int(params["scoring"]["max_probe_tokens"]))
        report.model.eval()
        line = []
        for split, records in held_out.items():
            split_scores, _ = score_requests(report.model, scorer, records["text"].tolist(),
                                             records["language"].tolist(), batch_size=32)
            scores[f"{split}_{epoch}"] = split_scores
            predicted = np.asarray(LABELS)[split_scores.argmax(1)]
            by_language = " ".join(
                f"{language} {f1_score(records['label'][rows], predicted[rows], average='macro'):.3f}"
                for language in sorted(records["language"].unique())
                for rows in [(records["language"] == language).to_numpy()])
            line.append(f"{split} macro-F1 {f1_score(records['label'], predicted, average='macro'):.3f}"
                        f" ({by_language}) unsafe-miss "
                        f"{unsafe_miss_rate(records['label'].tolist(), predicted.tolist()):.3f}")
        report.model.train()
        print(f"[{args.tag} seed {args.seed}] epoch {epoch}: " + ", ".join(line), flush=True)

    began = time.perf_counter()
    train_so8t(base_dir, samples, training, checkpoint_dir=training["checkpoint"]["dir"],
               on_step=on_step)
    print(f"[{args.tag} seed {args.seed}] trained in {time.perf_counter() - began:.0f} s")
    np.savez(args.work_dir / f"{args.tag}_{args.seed}.npz", **scores)


if __name__ == "__main__":
    main()
