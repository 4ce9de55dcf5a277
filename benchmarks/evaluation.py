"""Classifier throughput on the embedded model, and the wall time of evaluation-only runs.

Uses the artefacts a ``kedro run`` left in the project (``data/06_models``,
``data/03_primary``); run the training first (``kedro run`` or
``kedro run --pipelines=data_processing,thinking_sft,training``).

1. Loads the latest ``embedded_base_model`` + ``so8t_adapter`` exactly as the evaluation's
   scoring node does (``so8t_kedro.decision.scoring.load_scoring_model``), and scores the latest
   test split with ``score_requests`` at each ``--batch-sizes`` (one warm-up pass, then the
   best of ``--repeats`` timed passes): requests/s and the per-request latency.
2. Fits the reference classifier (``evaluation.reference_classifier`` of
   conf/base/parameters_evaluation.yml) on the latest train split as the evaluation's
   ``fit_reference_classifier`` node does, and scores the test split one request at a time:
   fit seconds, requests/s, latency p50, and its test macro-F1 / unsafe-miss rate.
3. Times, as a user would type them (wall clock of the whole command, Kedro start-up
   included):
   a. ``kedro run --pipelines=evaluation`` (scores validation + test, calibrates, reports);
   b. ``kedro run --nodes=compute_evaluation_metrics,plot_confusion_matrix,...,
      render_evaluation_report`` (everything after scoring, on the persisted predictions).
   Target: (a) <= 60 s on a 2-core CPU.

    python benchmarks/evaluation.py
    python benchmarks/evaluation.py --batch-sizes 1 16 --repeats 3 --skip-kedro
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

import numpy as np
import pandas as pd
import torch
import yaml
from saved_versions import latest_version

from so8t_kedro.decision.classifier import FourClassScorer
from so8t_kedro.decision.metrics import classification_metrics
from so8t_kedro.decision.reference_classifier import (
    fit_reference_classifier,
    score_requests_one_by_one,
)
from so8t_kedro.decision.scoring import load_scoring_model, score_requests
from so8t_kedro.labels import LABELS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
AFTER_SCORING = ("compute_evaluation_metrics,plot_confusion_matrix,plot_reliability_diagram,"
                 "plot_per_class_metrics,render_evaluation_report,fit_temperature_calibration,"
                 "compute_baseline_metrics")


def classifier_throughput(project: Path, batch_sizes: list[int], repeats: int) -> None:
    base = latest_version(project / "data/06_models/embedded_base_model")
    adapter = latest_version(project / "data/06_models/so8t_adapter")
    test = pd.read_json(latest_version(project / "data/03_primary/four_class_test.jsonl"),
                        lines=True, dtype=False)
    model, tokenizer = load_scoring_model(base, adapter, device="auto")
    scorer = FourClassScorer(tokenizer, max_probe_tokens=1024)
    texts, languages = test["text"].tolist(), test["language"].tolist()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {base.name} + {adapter.name} ({n_params / 1e6:.2f} M parameters), "
          f"{len(texts)} test requests, device {next(model.parameters()).device}")
    print(f"{'batch':>6} {'requests/s':>11} {'latency p50 ms':>15} {'latency p95 ms':>15}")
    for batch_size in batch_sizes:
        score_requests(model, scorer, texts, languages, batch_size=batch_size)  # warm-up
        best, latency = float("inf"), np.zeros(0)
        for _ in range(repeats):
            began = time.perf_counter()
            _, run_latency = score_requests(model, scorer, texts, languages,
                                            batch_size=batch_size)
            elapsed = time.perf_counter() - began
            if elapsed < best:
                best, latency = elapsed, run_latency
        print(f"{batch_size:>6} {len(texts) / best:>11.1f} {np.percentile(latency, 50):>15.2f} "
              f"{np.percentile(latency, 95):>15.2f}")


def reference_classifier_timing(project: Path) -> None:
    split = {name: pd.read_json(latest_version(project / f"data/03_primary/four_class_{name}.jsonl"),
                                lines=True, dtype=False) for name in ("train", "test")}
    conf = yaml.safe_load((project / "conf/base/parameters_evaluation.yml").read_text())
    began = time.perf_counter()
    classifier = fit_reference_classifier(split["train"]["text"].tolist(),
                                          split["train"]["label"].tolist(),
                                          conf["evaluation"]["reference_classifier"])
    fit_seconds = time.perf_counter() - began
    texts = split["test"]["text"].tolist()
    began = time.perf_counter()
    scores, latency = score_requests_one_by_one(classifier, texts)
    elapsed = time.perf_counter() - began
    metrics = classification_metrics(split["test"]["label"].tolist(),
                                     list(np.asarray(LABELS)[scores.argmax(axis=1)]))
    print(f"reference classifier: fit on {len(split['train'])} requests {fit_seconds:.2f} s; "
          f"{len(texts) / elapsed:.1f} requests/s one at a time, latency p50 "
          f"{np.percentile(latency, 50):.2f} ms; test macro-F1 {metrics['macro_f1']:.3f}, "
          f"unsafe-miss {metrics['unsafe_miss_rate']:.3f}")


def timed_kedro(project: Path, *args: str) -> float:
    began = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "kedro", "run", *args], cwd=project,
                            capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - began
    if result.returncode != 0:
        sys.exit(f"kedro run {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=PROJECT_ROOT)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-kedro", action="store_true",
                        help="only the classifier throughput, no `kedro run` timings")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    classifier_throughput(args.project, args.batch_sizes, args.repeats)
    reference_classifier_timing(args.project)
    if args.skip_kedro:
        return
    full = timed_kedro(args.project, "--pipelines=evaluation")
    print(f"kedro run --pipelines=evaluation: {full:.1f} s wall (target <= 60 s)")
    rerun = timed_kedro(args.project, f"--nodes={AFTER_SCORING}")
    print(f"kedro run --nodes=<everything after scoring>: {rerun:.1f} s wall")


if __name__ == "__main__":
    main()
