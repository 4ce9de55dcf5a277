"""GGUF export of the embedded tiny model: file sizes, write times, agreement with HF.

In one run (nothing is downloaded):

1. builds the embedded default base model as the training pipeline's
   ``build_embedded_base_model`` node does, with ``conf/base/parameters_training.yml``'s
   ``base_model.embedded`` settings (hidden 128, 2 layers, vocabulary <= 4000), from the
   shipped seed data rendered by the thinking_sft pipeline's node, and saves it with
   ``save_base_model`` (or takes ``--model-dir``, e.g. a baked model);
2. writes F16 and Q8_0 with ``write_gguf`` and Q4_K_M with ``quantize_gguf`` (from the
   F16 file), timing each (best of ``--repeats``), and reads each back with
   ``gguf_summary`` (size, tensor types: how llama.cpp treated rows that are not a multiple
   of 256 in Q4_K_M);
3. runs ``verify_gguf`` on each file with the seed requests rendered as chat prompts
   (``think.render_prompt``, both languages): vocabulary, tokenisation agreement,
   and next-token logits at every position against the fp32 Hugging Face model.

    python benchmarks/gguf_export.py
    python benchmarks/gguf_export.py --prompts 0            # every seed request
    python benchmarks/gguf_export.py --model-dir data/06_models/baked_model/<version>/baked_model
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

import pandas as pd
from seed_samples import build_embedded

from so8t_kedro import think as tf
from so8t_kedro.export.gguf import gguf_summary, quantize_gguf, verify_gguf, write_gguf

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SEED = PROJECT_ROOT / "data/01_raw/so8t_seed_dataset.jsonl"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="a saved Phi-3 directory; default: build the embedded model")
    parser.add_argument("--prompts", type=int, default=200,
                        help="seed requests to verify with, half per language where there "
                             "are enough (0: all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed writes per type")
    parser.add_argument("--out-dir", type=Path, default=None, help="default: a temp dir")
    return parser.parse_args()


def seed_prompts(rows: pd.DataFrame, limit: int) -> list[str]:
    if limit:
        per_language = -(-limit // rows["language"].nunique())
        rows = rows.groupby("language", group_keys=False).head(per_language).head(limit)
    return [tf.render_prompt(text, language) for text, language in
            zip(rows["text"], rows["language"])]


def timed(repeats: int, write) -> tuple[Path, float]:
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        path = write()
        best = min(best, time.perf_counter() - began)
    return path, best


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as temp:
        out = args.out_dir or Path(temp)
        out.mkdir(parents=True, exist_ok=True)
        rows = pd.read_json(SEED, lines=True, dtype=False)
        model_dir = args.model_dir or build_embedded(rows, out / "embedded_base_model")
        prompts = seed_prompts(rows, args.prompts)
        print(f"model: {model_dir}  ({platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs); {len(prompts)} chat prompts")

        f16, f16_s = timed(args.repeats, lambda: write_gguf(model_dir, out / "F16.gguf", "F16"))
        files = {"F16": (f16, f16_s)}
        files["Q8_0"] = timed(args.repeats,
                              lambda: write_gguf(model_dir, out / "Q8_0.gguf", "Q8_0"))
        files["Q4_K_M"] = timed(args.repeats,
                                lambda: quantize_gguf(f16, out / "Q4_K_M.gguf", "Q4_K_M"))

        print(f"\n{'type':<7} {'bytes':>10} {'x F16':>6} {'write s':>8} {'verify s':>9} "
              f"{'vocab':>6} {'tok ok':>7} {'positions':>9} {'max|dlogit|':>11} "
              f"{'mean|dlogit|':>12} {'top-1':>7} {'HF logit std':>12}")
        reports = {}
        for outtype, (path, seconds) in files.items():
            summary = gguf_summary(path)
            began = time.perf_counter()
            report = verify_gguf(path, model_dir, prompts)
            verify_s = time.perf_counter() - began
            tokenized_ok = report["n_prompts"] - len(report["tokenization_mismatches"])
            print(f"{outtype:<7} {summary['file_size_bytes']:>10,} "
                  f"{summary['file_size_bytes'] / files['F16'][0].stat().st_size:>6.2f} "
                  f"{seconds:>8.3f} {verify_s:>9.1f} "
                  f"{'ok' if report['vocab_match'] else 'DIFF':>6} "
                  f"{tokenized_ok:>3}/{report['n_prompts']:<3} {report['n_positions']:>9} "
                  f"{report['max_abs_logit_diff']:>11.2e} {report['mean_abs_logit_diff']:>12.2e} "
                  f"{report['top1_agreement']:>7.4f} {report['hf_logit_std']:>12.2f}")
            reports[outtype] = {"summary": summary, "verify": report}
        for outtype, entry in reports.items():
            print(f"\n{outtype} tensor types: {json.dumps(entry['summary']['tensor_types'])}")
            if outtype == "Q4_K_M":
                for name, kind in entry["summary"]["tensors"].items():
                    print(f"  {name:<28} {kind}")


if __name__ == "__main__":
    main()
