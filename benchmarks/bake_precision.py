"""How far a baked model's logits drift from the gated model's, per bake dtype.

Uses the artefacts a ``kedro run`` left in the project: the latest ``embedded_base_model``,
``so8t_adapter`` and ``thinking_sft_dataset`` (run
``kedro run --pipelines=data_processing,thinking_sft,training`` first), or the directories
given. It bakes once with ``so8t.bake_from_adapter`` (LoRA merged in fp32, gates folded in
fp64), casts that once to each dtype (which is what ``bake_from_adapter(dtype=...)`` does)
and compares with the gated model (base + adapter in fp32) on the same held-out texts as
the export's ``verify_bake`` node, two ways:

* ``weights``: the baked weights upcast to fp32 and run in fp32. This is what ``verify_bake``
  measures on the CPU (it loads every model in fp32): the error of storing the weights in
  the dtype, which ``export.bake.tolerance`` bounds.
* ``compute``: the baked model run in its own dtype, as a bf16/fp16 runtime would; this adds
  the arithmetic's rounding to the weights' (it is not a bake error: the gated model run in
  that dtype would drift by about as much).

    python benchmarks/bake_precision.py
    python benchmarks/bake_precision.py --base-model DIR --adapter DIR --split test --n 8
"""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

import pandas as pd
import torch
from saved_versions import latest_version

from so8t_kedro import so8t
from so8t_kedro.decision.scoring import load_scoring_model
from so8t_kedro.pipelines.export.nodes import held_out_texts

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DTYPES = ("float32", "bfloat16", "float16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=PROJECT_ROOT)
    parser.add_argument("--base-model", type=Path)
    parser.add_argument("--adapter", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=8, help="held-out texts (export.verify)")
    parser.add_argument("--max-tokens", type=int, default=512)
    args = parser.parse_args()
    data = args.project / "data"
    base = args.base_model or latest_version(data / "06_models/embedded_base_model")
    adapter = args.adapter or latest_version(data / "06_models/so8t_adapter")
    sft = pd.read_json(latest_version(data / "05_model_input/thinking_sft/"
                                      "thinking_sft_dataset.jsonl"), lines=True, dtype=False)
    texts = held_out_texts(sft, {"split": args.split, "n_prompts": args.n})

    gated, tokenizer = load_scoring_model(base, adapter, device="cpu")
    batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                      max_length=args.max_tokens)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    print(f"base {base}\nadapter {adapter}\n{len(texts)} {args.split} texts, "
          f"{int(mask.sum())} tokens, torch {torch.__version__}, CPU")
    print(f"{'dtype':>9} {'kind':>8} {'max |dlogit|':>13} {'top-1 agreement':>16}")
    # bake_from_adapter(dtype=d) is the fp32 bake cast once to d: bake (load, merge, fold)
    # once and cast copies, instead of loading the base again for every dtype.
    baked_fp32 = so8t.bake_from_adapter(base, adapter, dtype="float32")
    for dtype in DTYPES:
        baked = (baked_fp32 if dtype == "float32"
                 else copy.deepcopy(baked_fp32).to(getattr(torch, dtype)))
        report(dtype, "compute", so8t.verify_bake(gated, baked, ids, mask))
        if dtype != "float32":
            report(dtype, "weights", so8t.verify_bake(gated, baked.to(torch.float32), ids, mask))


def report(dtype: str, how: str, result: dict) -> None:
    print(f"{dtype:>9} {how:>8} {result['max_abs_logit_diff']:>13.3e} "
          f"{result['top1_agreement']:>16.4f}")


if __name__ == "__main__":
    main()
