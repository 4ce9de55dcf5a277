"""What MLflow tracking costs the training loop: ``train_so8t`` with and without the
per-step MLflow tracker (target: < 2 % of training time).

Builds the embedded default base model from the shipped seed data (as the training
pipeline's ``build_embedded_base_model`` node does, fewer pre-training epochs: the
model's quality does not matter here), then trains it with the embedded default's
training parameters (``base_model.embedded_training`` over ``training``, as ``kedro run``
does) for ``--steps`` optimiser steps, alternately

  off: ``trackers=[]`` (tracking off: what every run did before tracking existed);
  on:  ``trackers=[MlflowStepTracker]`` logging every step's loss terms, lr, PET lambda and
       throughput into a run of a fresh SQLite store, as ``kedro run`` does with the
       default conf/base/mlflow.yml; the time to flush MLflow's queue at the end counts.

Rounds are interleaved (off, on, off, on, ...) so that drift in machine load hits both;
medians are reported, of the whole ``train_so8t`` call (model load and tokenisation
included, the same in both) and of its optimiser steps alone (the loop's profiler).

    python benchmarks/tracking_overhead.py
    python benchmarks/tracking_overhead.py --steps 60 --repeats 5 --per-label 128
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
from seed_samples import PROJECT_ROOT, build_embedded, render_seed_samples


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="optimiser steps per training")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of (off, on)")
    parser.add_argument("--per-label", type=int, default=48,
                        help="seed rows per label (6 of 8 train, 2 val): the validation "
                             "loss before and after training costs the same in both")
    parser.add_argument("--pretrain-epochs", type=int, default=1)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    for name in ("so8t_kedro", "transformers", "peft", "accelerate", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)

    import mlflow
    import torch
    from mlflow import MlflowClient

    from so8t_kedro.tracking.steps import MlflowStepTracker
    from so8t_kedro.training.base_model import training_params_for
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
        # As kedro-mlflow does: mlflow.flush_async_logging() flushes this URI's store.
        mlflow.set_tracking_uri(uri)
        client = MlflowClient(uri)
        experiment = client.create_experiment("overhead", artifact_location=str(tmp / "art"))
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; mlflow "
              f"{mlflow.__version__}; {args.steps} steps x {args.repeats} rounds; batch "
              f"{params['batch_size']}, max_seq_length {params['max_seq_length']}")

        def train(trackers: list) -> tuple[float, float]:
            start = time.perf_counter()
            result = train_so8t(base, samples, copy.deepcopy(params),
                                checkpoint_dir=tmp / "checkpoints", trackers=trackers)
            mlflow.flush_async_logging()
            wall = time.perf_counter() - start
            if result.summary["optimizer_steps"] < args.steps:
                raise SystemExit(f"--steps {args.steps}: the {len(rows)} rows give only "
                                 f"{result.summary['optimizer_steps']} steps; raise --per-label")
            return wall, result.summary["performance"]["step_time_seconds"]["total"]

        times: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
        for _ in range(args.repeats):
            times["off"].append(train([]))
            run = client.create_run(experiment)
            times["on"].append(train([MlflowStepTracker(run.info.run_id, uri)]))
            client.set_terminated(run.info.run_id)
            logged = client.get_metric_history(run.info.run_id, "loss")
            assert [m.step for m in logged] == list(range(1, args.steps + 1)), logged
            print(f"  off {times['off'][-1][0]:.2f} s, on {times['on'][-1][0]:.2f} s")

        # The logging alone, serially (an upper bound: in training the queue is written
        # by MLflow's thread while the next step computes): the same metrics per step, at
        # the tracker's pace (every interval_s, here once: the loop is faster).
        run = client.create_run(experiment)
        tracker = MlflowStepTracker(run.info.run_id, uri)
        values = dict.fromkeys((*LOSS_TERMS, "lr", "pet_lambda", "tokens_per_second",
                                "samples_per_second"), 1.0)
        start = time.perf_counter()
        for step in range(1, args.steps + 1):
            tracker.log(values, step=step)
        tracker.finish()
        mlflow.flush_async_logging()
        logging_only = time.perf_counter() - start

    for label, index in (("train_so8t wall time", 0), ("optimiser steps only", 1)):
        off = statistics.median(t[index] for t in times["off"])
        on = statistics.median(t[index] for t in times["on"])
        paired = statistics.median(100 * (b[index] - a[index]) / a[index]
                                   for a, b in zip(times["off"], times["on"], strict=True))
        print(f"{label}: median off {off:.2f} s, on {on:.2f} s: {100 * (on - off) / off:+.2f} %;"
              f" median of the rounds' paired differences {paired:+.2f} %")
    steps_off = statistics.median(t[1] for t in times["off"])
    print(f"logging alone, serially: {logging_only:.3f} s for {args.steps} steps "
          f"({1000 * logging_only / args.steps:.1f} ms per step, "
          f"{100 * logging_only / steps_off:.2f} % of the optimiser steps' time)")


if __name__ == "__main__":
    main()
