"""What MLflow tracking costs training: the ``train_so8t`` call with and without the
per-step MLflow tracker (issue 19's target: < 2 % of training wall time).

Builds the embedded default base model from the shipped seed data (as the training
pipeline's ``build_embedded_base_model`` node does, fewer pre-training epochs: the
model's quality does not matter here), then trains it with the embedded default's
training parameters (``base_model.embedded_training`` over ``training``, as ``kedro run``
does) for ``--steps`` optimiser steps, in paired rounds of two trainings:

  off: ``trackers=[]`` (tracking off: what every run did before tracking existed);
  on:  ``trackers=[MlflowStepTracker]`` logging every step's loss terms, lr, PET lambda and
       throughput into a run of a fresh SQLite store, as ``kedro run`` does with the
       default conf/base/mlflow.yml. Its time runs until every step is in the store (the
       train call, then the wait for the tracker's writer), so nothing is left unpaid.

The figure against the target is the median over rounds of each round's paired
difference (on - off) / off of that wall time, with the smallest and largest round: a
round's two trainings run back to back, which is first alternates, so drift in the
machine's load hits both. The verdict rests on a distribution-free confidence interval of
that median (order statistics of the sorted differences, the binomial sign-test bounds, at
least 90 %: 5 rounds or more): "met" where its upper end is below the target, "NOT met"
where its lower end is above, "inconclusive" otherwise (a round's noise on 2 cores is a few
per cent either way, so single rounds prove nothing). Process CPU time (all threads: the
tracker's writer included) is reported the same way; it is less sensitive than wall time
to other processes. Model
load, tokenisation and the validation before and after are in the call, the same in both.
A warm-up training runs first and is not counted.

    python benchmarks/tracking_overhead.py
    python benchmarks/tracking_overhead.py --steps 60 --rounds 7 --per-label 128
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import yaml
from scipy.stats import binom
from seed_samples import PROJECT_ROOT, build_embedded, render_seed_samples

TARGET_PERCENT = 2.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="optimiser steps per training")
    parser.add_argument("--rounds", type=int, default=5, help="paired rounds of (off, on)")
    parser.add_argument("--per-label", type=int, default=48,
                        help="seed rows per label (6 of 8 train, 2 val)")
    parser.add_argument("--pretrain-epochs", type=int, default=1)
    return parser.parse_args()


def load_average() -> str:
    return "load average " + " ".join(f"{load:.2f}" for load in os.getloadavg())


def paired(times: dict[str, list[dict[str, float]]], key: str) -> list[float]:
    """The rounds' (on - off) / off of ``key``, in %, sorted."""
    return sorted(100 * (on[key] - off[key]) / off[key]
                  for off, on in zip(times["off"], times["on"], strict=True))


def median_interval(differences: list[float], confidence: float = 0.9):
    """``(low, high, coverage)``: the order statistics that bound the median of sorted
    ``differences`` with at least ``confidence`` (sign test: the count of rounds below the
    true median is Binomial(n, 1/2)); None when there are too few rounds for it."""
    n = len(differences)
    # The widest-inward k with P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2.
    k = 0
    while binom.cdf(k, n, 0.5) <= (1 - confidence) / 2:
        k += 1
    if k == 0:
        return None
    return differences[k - 1], differences[n - k], 1 - 2 * binom.cdf(k - 1, n, 0.5)


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    for name in ("so8t_kedro", "transformers", "peft", "accelerate", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)

    import mlflow
    import torch
    from mlflow import MlflowClient

    from so8t_kedro.models.selection import training_params_for
    from so8t_kedro.tracking.steps import MlflowStepTracker
    from so8t_kedro.training.loop import LOSS_TERMS, train_so8t

    all_params = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_training.yml")
                                .read_text())
    params = training_params_for(all_params["base_model"], all_params["training"])
    params.update(max_steps=args.steps)
    params["progress"]["show_progress_bar"] = False
    rows = pd.read_json(PROJECT_ROOT / "data/01_raw/so8t_seed_dataset.jsonl", lines=True,
                        dtype=False).groupby("label").head(args.per_label)
    samples = render_seed_samples(rows)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = build_embedded(rows, tmp / "base", pretrain_epochs=args.pretrain_epochs)
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        client = MlflowClient(uri)
        experiment = client.create_experiment("overhead", artifact_location=str(tmp / "art"))
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"{os.cpu_count()} CPUs; mlflow {mlflow.__version__}; {args.steps} steps x "
              f"{args.rounds} rounds; batch {params['batch_size']}, max_seq_length "
              f"{params['max_seq_length']}; at the start: {load_average()}")

        def train(tracking: bool) -> dict[str, float]:
            run_id = client.create_run(experiment).info.run_id if tracking else None
            trackers = [MlflowStepTracker(run_id, uri)] if tracking else []
            wall, cpu = time.perf_counter(), time.process_time()
            result = train_so8t(base, samples, copy.deepcopy(params),
                                checkpoint_dir=tmp / "checkpoints", trackers=trackers)
            call = time.perf_counter() - wall
            for tracker in trackers:
                tracker.flush()
            measured = {"wall": time.perf_counter() - wall, "call": call,
                        "cpu": time.process_time() - cpu,
                        "steps": result.summary["performance"]["step_time_seconds"]["total"]}
            if result.summary["optimizer_steps"] < args.steps:
                raise SystemExit(f"--steps {args.steps}: the {len(rows)} rows give only "
                                 f"{result.summary['optimizer_steps']} steps; raise --per-label")
            if tracking:
                client.set_terminated(run_id)
                logged = [m.step for m in client.get_metric_history(run_id, "loss")]
                assert logged == list(range(1, args.steps + 1)), "a step was not logged"
            return measured

        train(tracking=False)  # warm-up: first-call costs (allocator, lazy imports)
        times: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
        for round_ in range(args.rounds):
            for label in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                times[label].append(train(tracking=label == "on"))
            off, on = times["off"][-1], times["on"][-1]
            print(f"  round {round_ + 1}: off {off['wall']:.2f} s, on {on['wall']:.2f} s (call "
                  f"{on['call']:.2f} s + {1000 * (on['wall'] - on['call']):.0f} ms until stored): "
                  f"{100 * (on['wall'] - off['wall']) / off['wall']:+.2f} %; {load_average()}")

        # The tracker's own work, without training: log() on the calling thread, and the
        # writer storing the same steps (here in one write; in training, one per interval_s).
        tracker = MlflowStepTracker(client.create_run(experiment).info.run_id, uri,
                                    interval_s=3600)
        values = dict.fromkeys((*LOSS_TERMS, "lr", "pet_lambda", "tokens_per_second",
                                "samples_per_second"), 1.0)
        start = time.perf_counter()
        for step in range(1, args.steps + 1):
            tracker.log(values, step=step)
        logging_s = time.perf_counter() - start
        start = time.perf_counter()
        tracker.flush()
        writing_s = time.perf_counter() - start

    print(f"at the end: {load_average()}")
    for key, what in (("cpu", "process CPU time (all threads)"),
                      ("steps", "optimiser steps alone (wall)")):
        differences = paired(times, key)
        print(f"{what}: median off {statistics.median(t[key] for t in times['off']):.2f} s, "
              f"on {statistics.median(t[key] for t in times['on']):.2f} s; paired "
              f"{statistics.median(differences):+.2f} % (rounds {differences[0]:+.2f} .. "
              f"{differences[-1]:+.2f} %)")
    call_off = statistics.median(t["wall"] for t in times["off"])
    print(f"tracker's own work: log() {1e6 * logging_s / args.steps:.0f} us per step on the "
          f"training thread; storing {args.steps} steps {1000 * writing_s:.0f} ms on its writer "
          f"thread ({100 * (logging_s + writing_s) / call_off:.2f} % of the train call)")
    differences = paired(times, "wall")
    interval = median_interval(differences)
    if interval is None:
        verdict, bounds = "inconclusive: too few rounds for a 90 % interval (use 5 or more)", ""
    else:
        low, high, coverage = interval
        bounds = f"; {100 * coverage:.1f} % interval of the median {low:+.2f} .. {high:+.2f} %"
        verdict = ("met" if high < TARGET_PERCENT else "NOT met" if low > TARGET_PERCENT
                   else "inconclusive: the interval straddles the target (more rounds, or "
                        "a quieter machine)")
    print(f"TRACKING OVERHEAD on training wall time (train_so8t call until every step is "
          f"stored), median of {args.rounds} paired rounds: {statistics.median(differences):+.2f} %"
          f" (rounds {differences[0]:+.2f} .. {differences[-1]:+.2f} %{bounds}; median off "
          f"{call_off:.2f} s, on {statistics.median(t['wall'] for t in times['on']):.2f} s); "
          f"target < {TARGET_PERCENT:g} %: {verdict}")


if __name__ == "__main__":
    main()
