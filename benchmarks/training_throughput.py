"""Training throughput of the SO8T loop vs a plain Hugging Face ``Trainer`` + PEFT LoRA.

In one run, on the same tiny config (nothing is downloaded):

1. builds the embedded default base model deterministically, as the training pipeline's
   ``build_embedded_base_model`` node does (``embedded_base_model`` + ``pretrain_causal_lm``
   on the train split's raw requests), from the shipped seed data rendered by the
   thinking_sft pipeline's ``render_thinking_sft_samples`` node, and saves it with ``save_base_model`` to a temp dir;
2. tokens/s over the optimiser steps after warm-up of
   p. ``train_so8t`` with the Trainer's exact model and objective (LM only, no gates), in
      its length-grouped batches (``training.length_group_batches``);
   a. ``train_so8t`` with the LM-only objective (safety and distill 0, PET λ 0, orthogonality
      weight 0, gates on);
   b. ``train_so8t`` with the full default objective (the four-class term read from the
      decision tail in the same pass, PET, orthogonality);
   c. ``transformers.Trainer`` + PEFT LoRA, its defaults (random batches padded to their
      longest sample), with the same base, LoRA config, batch size, max length, learning
      rate/schedule, optimiser, quantisation, collation and prompt-masked labels;
   all with the embedded default's training parameters (``base_model.embedded_training``
   over ``training``), as ``kedro run`` trains it. The two ratios issue 15 sets: p/c (the
   cost of padding, target >= 1.3) and b/a (the cost of the decision term, target >= 0.8);
3. the rolling-checkpoint save time (``CheckpointManager.save("rolling", ...)``, median of
   5) of the state trained in (b), as a share of the checkpoint interval, and its size.

Timing method (the same for all three): wall time of each optimiser step, from just
before the first micro-batch's forward to just after ``zero_grad`` (forward, backward,
clipping, AdamW, scheduler), summed over the steps after the first ``--warmup`` ones;
tokens are the non-pad tokens (prompt + completion) of the batches of those steps.
For the loop this is its own ``PerformanceProfiler`` (``summary["performance"]``), given
``warmup_steps``; for the Trainer a ``TrainerCallback`` timing ``on_step_begin`` →
``on_step_end``. The loop's window also holds its batch collation (the Trainer collates
in its DataLoader, before ``on_step_begin``): this slightly favours the baseline.

    python benchmarks/training_throughput.py
    python benchmarks/training_throughput.py --quantization none --per-label 32 --steps 20
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

import pandas as pd
import torch
from seed_samples import project_parameters, render_seed_samples

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-label", type=int, default=32,
                        help="seed rows per label (3/4 train, 1/4 val, as the tests split)")
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the timing")
    parser.add_argument("--steps", type=int, default=30,
                        help="at least this many timed steps (epochs are added to reach it)")
    parser.add_argument("--quantization", default=None, choices=["8bit", "4bit", "none"],
                        help="default: the embedded default's training parameters")
    parser.add_argument("--batch-size", type=int, default=None, help="default: parameters (8)")
    parser.add_argument("--max-seq-length", type=int, default=None,
                        help="default: parameters (1024)")
    parser.add_argument("--lora-r", type=int, default=None, help="default: parameters")
    parser.add_argument("--hidden", type=int, default=None, help="embedded hidden size")
    parser.add_argument("--layers", type=int, default=None, help="embedded layer count")
    parser.add_argument("--vocab", type=int, default=None, help="embedded vocabulary size")
    parser.add_argument("--pretrain-epochs", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of (a, b, c), interleaved; medians are reported")
    parser.add_argument("--checkpoint-repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    return parser.parse_args()


# --------------------------------------------------------------------------- data + base


def seed_samples(per_label: int) -> pd.DataFrame:
    """Balanced seed rows rendered as /think SFT samples by the thinking_sft pipeline's node."""
    from so8t_kedro.labels import LABELS

    rows = [json.loads(line) for line in
            (PROJECT_ROOT / "data/01_raw/so8t_seed_dataset.jsonl").read_text().splitlines()]
    picked = []
    for label in LABELS:
        picked += [r for r in rows if r["label"] == label][:per_label]
    return render_seed_samples(pd.DataFrame(picked))


def build_base(samples: pd.DataFrame, embedded: dict, out_dir: Path) -> Path:
    """What the pipeline's ``build_embedded_base_model`` node does, saved to ``out_dir``."""
    from so8t_kedro.pipelines.training.nodes import build_embedded_base_model

    bundle = build_embedded_base_model(samples, embedded)
    bundle.save_pretrained(out_dir)
    return out_dir


# --------------------------------------------------------------------------- our loop


def run_ours(base_dir: Path, samples: pd.DataFrame, params: dict, warmup: int,
             checkpoint_dir: Path):
    """``train_so8t`` with its profiler's first ``warmup`` steps left out of the report."""
    from so8t_kedro.training import loop
    from so8t_kedro.training.progress import PerformanceProfiler

    class _WarmProfiler(PerformanceProfiler):
        def __init__(self, **kwargs):
            kwargs.setdefault("warmup_steps", warmup)
            super().__init__(**kwargs)

    original = loop.PerformanceProfiler
    loop.PerformanceProfiler = _WarmProfiler
    try:
        result = loop.train_so8t(base_dir, samples, params, checkpoint_dir=checkpoint_dir)
    finally:
        loop.PerformanceProfiler = original
    return result


# --------------------------------------------------------------------------- baseline


def run_trainer(base_dir: Path, samples: pd.DataFrame, params: dict, warmup: int,
                out_dir: Path) -> dict:
    """Plain ``Trainer`` + PEFT LoRA (no gates, no extra losses), timed per optimiser step."""
    from accelerate.utils import set_seed
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from so8t_kedro.training.loop import (
        add_adapters,
        collate,
        load_training_base,
        tokenise_samples,
    )

    set_seed(int(params["seed"]))
    cuda = torch.cuda.is_available()
    model, tokenizer = load_training_base(base_dir, params,
                                          torch.device("cuda" if cuda else "cpu"))
    # The loop's own k-bit preparation and LoRA, without the SO8T gates.
    model = add_adapters(model, {**params, "so8t": {**params["so8t"], "enabled": False}})
    train = tokenise_samples(samples[samples["split"] == "train"], tokenizer,
                             int(params["max_seq_length"]),
                             min_target_tokens=int(params["min_target_tokens"]))
    pad_id = tokenizer.pad_token_id

    step_times: list[float] = []
    step_tokens: list[int] = []
    pending = [0]

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()
            pending[0] = 0

        def on_step_end(self, args, state, control, **kwargs):
            step_times.append(time.perf_counter() - self._start)
            step_tokens.append(pending[0])

    class CountingTrainer(Trainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            pending[0] += int(inputs["attention_mask"].sum())
            return super().training_step(model, inputs, num_items_in_batch)

    bf16 = cuda and params.get("mixed_precision") == "bf16"
    args = TrainingArguments(
        output_dir=str(out_dir),
        num_train_epochs=int(params["epochs"]),
        per_device_train_batch_size=int(params["batch_size"]),
        gradient_accumulation_steps=int(params["gradient_accumulation_steps"]),
        learning_rate=float(params["learning_rate"]),
        weight_decay=float(params["weight_decay"]),
        warmup_steps=float(params["warmup_ratio"]),  # a float < 1 is a ratio in transformers 5
        lr_scheduler_type="cosine",
        max_grad_norm=float(params["max_grad_norm"]),
        optim="adamw_torch",  # torch.optim.AdamW, as the loop
        seed=int(params["seed"]),
        bf16=bf16,
        gradient_checkpointing=bool(params.get("gradient_checkpointing")),
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to=[],
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    trainer = CountingTrainer(model=model, args=args, train_dataset=train,
                              data_collator=lambda batch: collate(batch, pad_id),
                              callbacks=[StepTimer()])
    wall = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - wall
    times, tokens = step_times[warmup:], step_tokens[warmup:]
    busy = sum(times)
    return {"steps": len(times), "warmup_steps_skipped": min(warmup, len(step_times)),
            "total_tokens": sum(tokens), "busy_seconds": busy,
            "tokens_per_second": sum(tokens) / busy if busy else float("nan"),
            "step_time_p50": statistics.median(times) if times else float("nan"),
            "step_time_max": max(times) if times else float("nan"),
            "train_wall_seconds": wall, "total_steps": len(step_times)}


# --------------------------------------------------------------------------- checkpoint


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def time_rolling_save(final_checkpoint: Path, params: dict, root: Path, repeats: int):
    from so8t_kedro.training.checkpoint import CheckpointManager, load, new_session_id

    state = load(final_checkpoint)
    manager = CheckpointManager(root / new_session_id(),
                                interval_seconds=float(params["checkpoint"]["interval_seconds"]),
                                max_checkpoints=int(params["checkpoint"]["max_checkpoints"]),
                                params=state.params)
    times, size = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        folder = manager.save("rolling", state)
        times.append(time.perf_counter() - start)
        size = dir_size(folder)
    return times, size, state


# --------------------------------------------------------------------------- main


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    for name in ("so8t_kedro", "transformers", "peft", "accelerate", "bitsandbytes"):
        logging.getLogger(name).setLevel(logging.ERROR)

    import peft
    import transformers

    transformers.utils.logging.disable_progress_bar()

    all_params = project_parameters()
    embedded = copy.deepcopy(all_params["base_model"]["embedded"])
    for key, value in (("hidden_size", args.hidden), ("num_hidden_layers", args.layers),
                       ("vocab_size", args.vocab)):
        if value is not None:
            embedded[key] = value
    if args.pretrain_epochs is not None:
        embedded["pretrain"]["epochs"] = args.pretrain_epochs

    from so8t_kedro.models.selection import training_params_for
    from so8t_kedro.training.loop import batches_per_epoch

    base = training_params_for(all_params["base_model"], all_params["training"])
    if args.quantization is not None:
        base["quantization"] = None if args.quantization == "none" else args.quantization
    if args.batch_size is not None:
        base["batch_size"] = args.batch_size
    if args.max_seq_length is not None:
        base["max_seq_length"] = args.max_seq_length
    if args.lora_r is not None:
        base["lora"].update(r=args.lora_r, alpha=2 * args.lora_r)
    base["progress"]["show_progress_bar"] = False

    samples = seed_samples(args.per_label)
    n_train = int((samples["split"] == "train").sum())
    _, steps_per_epoch = batches_per_epoch(n_train, base["batch_size"],
                                           base["gradient_accumulation_steps"])
    base["epochs"] = max(1, math.ceil((args.warmup + args.steps) / steps_per_epoch))
    total_steps = base["epochs"] * steps_per_epoch

    lm_only = copy.deepcopy(base)
    lm_only["loss_weights"].update(safety=0.0, distill=0.0, orthogonal_reg=0.0)
    lm_only["pet_schedule"]["values"] = [0.0] * len(lm_only["pet_schedule"]["values"])
    plain = copy.deepcopy(lm_only)  # the Trainer's model exactly: LoRA, no gates
    plain["so8t"]["enabled"] = False

    print("== machine")
    print(f"platform: {platform.platform()}  python {platform.python_version()}")
    print(f"cpu_count: {os.cpu_count()}  usable cpus: {len(os.sched_getaffinity(0))}  "
          f"torch threads: {torch.get_num_threads()}  cuda: {torch.cuda.is_available()}")
    print(f"torch {torch.__version__}  transformers {transformers.__version__}  "
          f"peft {peft.__version__}")
    print("== config")
    print(f"embedded base: {json.dumps(embedded)}")
    print(f"samples: {len(samples)} ({n_train} train, {len(samples) - n_train} val; "
          f"{args.per_label} seed rows per label, quadruple format)")
    print(f"quantization: {base['quantization']}  batch_size: {base['batch_size']}  "
          f"grad_accum: {base['gradient_accumulation_steps']}  "
          f"max_seq_length: {base['max_seq_length']}  lr: {base['learning_rate']}  "
          f"warmup_ratio: {base['warmup_ratio']}  cosine schedule  "
          f"max_grad_norm: {base['max_grad_norm']}")
    print(f"lora: r={base['lora']['r']} alpha={base['lora']['alpha']} "
          f"dropout={base['lora']['dropout']} targets={base['lora']['target_modules']}")
    print(f"epochs: {base['epochs']}  steps/epoch: {steps_per_epoch}  total steps: "
          f"{total_steps}  warm-up steps excluded: {args.warmup}  timed steps: "
          f"{total_steps - args.warmup}")
    print("timing: sum of per-optimiser-step wall times (first forward -> zero_grad) over "
          "the steps after warm-up; tokens = non-pad tokens (prompt+completion) of those "
          "steps. Ours: the loop's PerformanceProfiler (summary['performance'], "
          "warmup_steps set); Trainer: a callback on_step_begin -> on_step_end. Ours also "
          "times its batch collation (Trainer collates before on_step_begin).")

    with tempfile.TemporaryDirectory(prefix="so8t_throughput_") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        base_dir = build_base(samples, embedded, tmp / "base")
        print("== results")
        print(f"embedded base built + pre-trained + saved in {time.perf_counter() - start:.1f} s"
              f" ({dir_size(base_dir) / 2**20:.2f} MiB)")

        runs = {"p": [], "a": [], "b": [], "c": []}
        for r in range(args.repeats):  # interleaved so that machine-load drift hits all three
            res_p = run_ours(base_dir, samples, plain, args.warmup, tmp / f"ckpt_p{r}")
            runs["p"].append(res_p.summary["performance"])
            res_a = run_ours(base_dir, samples, lm_only, args.warmup, tmp / f"ckpt_a{r}")
            res_b = run_ours(base_dir, samples, base, args.warmup, tmp / f"ckpt_b{r}")
            perf_c = run_trainer(base_dir, samples, base, args.warmup, tmp / f"trainer_{r}")
            runs["a"].append(res_a.summary["performance"])
            runs["b"].append(res_b.summary["performance"])
            runs["c"].append(perf_c)
            print(f"round {r + 1}/{args.repeats} tokens/s: "
                  f"p {runs['p'][-1]['tokens_per_second']:.1f}"
                  f"  a {runs['a'][-1]['tokens_per_second']:.1f}"
                  f"  b {runs['b'][-1]['tokens_per_second']:.1f}"
                  f"  c {perf_c['tokens_per_second']:.1f}")

        def median_run(key):
            ordered = sorted(runs[key], key=lambda p: p["tokens_per_second"])
            return ordered[(len(ordered) - 1) // 2]  # the median run (lower middle if even)

        perf_p, perf_a = median_run("p"), median_run("a")
        perf_b, perf_c = median_run("b"), median_run("c")
        print(f"(p) ours, LM-only, no gates        : {perf_p['tokens_per_second']:.1f} tokens/s "
              f"median of {args.repeats} (the Trainer's exact model and objective)")
        print(f"(a) ours, LM-only (gates on)      : {perf_a['tokens_per_second']:.1f} tokens/s "
              f"median of {args.repeats} ({perf_a['total_tokens']} tokens / "
              f"{perf_a['step_time_seconds']['total']:.2f} s over {perf_a['steps']} steps, p50 "
              f"step {perf_a['step_time_seconds']['p50']:.3f} s, max "
              f"{perf_a['step_time_seconds']['max']:.3f} s)")
        print(f"(b) ours, full objective           : {perf_b['tokens_per_second']:.1f} tokens/s "
              f"median of {args.repeats} ({perf_b['total_tokens']} tokens / "
              f"{perf_b['step_time_seconds']['total']:.2f} s over {perf_b['steps']} steps, p50 "
              f"step {perf_b['step_time_seconds']['p50']:.3f} s, max "
              f"{perf_b['step_time_seconds']['max']:.3f} s; does more work: the decision tail's "
              "tokens per sample for the safety loss, PET on the hidden states)")
        print(f"(c) HF Trainer + PEFT LoRA         : {perf_c['tokens_per_second']:.1f} tokens/s "
              f"median of {args.repeats} ({perf_c['total_tokens']} tokens / "
              f"{perf_c['busy_seconds']:.2f} s over {perf_c['steps']} steps, p50 step "
              f"{perf_c['step_time_p50']:.3f} s, max {perf_c['step_time_max']:.3f} s; "
              f"trainer.train() wall {perf_c['train_wall_seconds']:.2f} s for "
              f"{perf_c['total_steps']} steps)")
        ratio_p = perf_p["tokens_per_second"] / perf_c["tokens_per_second"]
        ratio_a = perf_a["tokens_per_second"] / perf_c["tokens_per_second"]
        ratio_b = perf_b["tokens_per_second"] / perf_a["tokens_per_second"]
        print(f"ratio ours(p)/Trainer: {ratio_p:.3f}  (same model and objective, length-grouped "
              f"batches vs the Trainer's random ones; target >= 1.3: "
              f"{'met' if ratio_p >= 1.3 else 'NOT met'})")
        print(f"ratio ours(a)/Trainer: {ratio_a:.3f}  (ours also runs the SO8T gates)")
        print(f"ratio ours(b)/ours(a): {ratio_b:.3f}  (full objective vs LM-only, the decision "
              f"read in the same pass; target >= 0.8: {'met' if ratio_b >= 0.8 else 'NOT met'})")

        final = Path(res_b.session_dir) / "checkpoint_final"
        times, size, state = time_rolling_save(final, base, tmp / "ckpt_bench",
                                               args.checkpoint_repeats)
        median = statistics.median(times)
        interval = float(base["checkpoint"]["interval_seconds"])
        n_trainable = sum(t.numel() for t in state.trainable.values())
        print(f"rolling checkpoint save (state of run b, {n_trainable} trainable values + "
              f"AdamW state): median {median * 1000:.1f} ms of {len(times)} "
              f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f} ms)")
        print(f"rolling checkpoint save as share of interval_seconds={interval:g}: "
              f"{100 * median / interval:.4f} %")
        print(f"rolling checkpoint size on disk: {size / 2**20:.2f} MiB ({size} bytes)")
        shutil.rmtree(tmp / "ckpt_bench", ignore_errors=True)


if __name__ == "__main__":
    main()
