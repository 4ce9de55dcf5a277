"""Kill anywhere, lose nothing: SIGKILL the training run at random moments, resume each time.

In one run (CPU, nothing downloaded):

1. builds the embedded default base model on balanced seed rows (training_throughput's
   ``seed_samples``, ``build_base``) and trains it once, uninterrupted, in a child process:
   the reference per-step losses;
2. trains the same run again in child processes, each SIGKILLed at a random moment of its
   training: once it has logged its first optimiser step, after a delay uniform on
   0..``--max-delay`` seconds (in a step, between steps, or in a checkpoint save), until
   ``--kills`` kills have landed, then lets the last child finish. A checkpoint is written every ``--interval`` seconds. Each child after
   the first resumes with ``training.resume=latest`` once a checkpoint exists;
3. prints how many kills and resumes there were, whether each resume loaded the newest
   loadable checkpoint (the child's first step is that checkpoint's step + 1), and the
   largest difference of any step's loss terms, in any child, from the reference.

Every child appends each optimiser step's record to a JSONL file as it goes, so the steps
of killed children count too (a step redone after a resume is compared again).

    python benchmarks/kill_resume.py               # 20 kills over a 200-step run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

import pandas as pd


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200, help="optimiser steps of the run")
    parser.add_argument("--per-label", type=int, default=40, help="seed rows per label")
    parser.add_argument("--interval", type=float, default=2.0,
                        help="checkpoint interval_seconds")
    parser.add_argument("--max-delay", type=float, default=3.0,
                        help="seconds after a child's first step within which it is killed")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per child")
    parser.add_argument("--child", nargs=4, metavar=("BASE", "SAMPLES", "PARAMS", "STEPS"),
                        help=argparse.SUPPRESS)
    return parser.parse_args()


def child(base_dir: str, samples_path: str, params_path: str, steps_path: str) -> None:
    """One training process: ``train_so8t``, each step's record appended to ``steps_path``."""
    import torch

    from so8t_kedro.training.loop import train_so8t

    params = json.loads(Path(params_path).read_text())
    torch.set_num_threads(int(params.pop("threads")))
    samples = pd.read_json(samples_path, lines=True, dtype=False)
    with open(steps_path, "a", encoding="utf-8") as out:

        def on_step(report):
            out.write(json.dumps({"step": report.step, **report.losses}) + "\n")
            out.flush()

        train_so8t(base_dir, samples, params, checkpoint_dir=params["checkpoint"]["dir"],
                   on_step=on_step)


def spawn(args, base_dir: Path, samples_path: Path, params: dict, work: Path, name: str):
    params_path, steps_path = work / f"{name}.params.json", work / f"{name}.steps.jsonl"
    params_path.write_text(json.dumps({**params, "threads": args.threads}))
    command = [sys.executable, __file__, "--child", str(base_dir), str(samples_path),
               str(params_path), str(steps_path)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True), steps_path


def read_steps(path: Path) -> list[dict]:
    if not path.exists():
        return []
    # A child killed mid-write leaves at most one partial last line.
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return records


def main() -> None:
    args = parse_args()
    if args.child:
        child(*args.child)
        return

    from training_throughput import build_base, load_parameters, seed_samples

    from so8t_kedro.models.selection import training_params_for
    from so8t_kedro.training.checkpoint import (
        CheckpointNotFoundError,
        latest,
        read_checkpoint_meta,
        session_finished,
    )
    from so8t_kedro.training.loop import LOSS_TERMS

    work = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    all_params = load_parameters()
    samples = seed_samples(args.per_label)
    samples_path = work / "samples.jsonl"
    samples.to_json(samples_path, orient="records", lines=True, force_ascii=False)
    embedded = {**all_params["base_model"]["embedded"]}
    embedded["pretrain"] = {**embedded["pretrain"], "epochs": 1}
    base_dir = build_base(samples, embedded, work / "base")
    params = training_params_for(all_params["base_model"], all_params["training"])
    params.update(epochs=100, max_steps=args.steps)  # the run is max_steps long
    params["progress"]["show_progress_bar"] = False

    def run_params(checkpoint_dir: Path, resume: str | None) -> dict:
        return {**params, "resume": resume,
                "checkpoint": {**params["checkpoint"], "dir": str(checkpoint_dir),
                               "interval_seconds": args.interval}}

    started = time.monotonic()
    process, reference_path = spawn(args, base_dir, samples_path,
                                    run_params(work / "reference", None), work, "reference")
    _, stderr = process.communicate()
    if process.returncode:
        raise SystemExit(f"reference run failed:\n{stderr[-3000:]}")
    reference = pd.DataFrame(read_steps(reference_path)).set_index("step")
    reference_seconds = time.monotonic() - started

    rng = random.Random(args.seed)
    checkpoints = work / "killed"
    kills = resumes = resumed_latest = 0
    failures: list[str] = []
    steps_files = []
    started = time.monotonic()
    while True:
        try:
            newest = latest(checkpoints)
        except CheckpointNotFoundError:
            newest = None
        if newest is not None and session_finished(newest.parent):
            break  # a child saved the final checkpoint, and was killed before it exited
        # Read now: the rolling stock may have pruned it by the time the child is done.
        newest_step = read_checkpoint_meta(newest)["step"] if newest is not None else None
        name = f"segment{len(steps_files):03d}"
        process, steps_path = spawn(args, base_dir, samples_path,
                                    run_params(checkpoints, "latest" if newest else None),
                                    work, name)
        steps_files.append(steps_path)
        resumes += newest is not None
        if kills < args.kills:
            # Killed only once it trains, so that every kill costs progress.
            while process.poll() is None and not read_steps(steps_path):
                time.sleep(0.05)
            try:
                process.wait(timeout=rng.uniform(0, args.max_delay))
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
                kills += 1
        else:
            process.wait()
        stderr = process.stderr.read()
        if process.returncode not in (0, -signal.SIGKILL):
            failures.append(f"{name}: exit {process.returncode}: {stderr[-500:]}")
            break
        steps = read_steps(steps_path)
        if newest is not None and steps:
            resumed_latest += steps[0]["step"] == newest_step + 1
        elif newest is not None:
            resumed_latest += 1  # killed before its first step: nothing to compare
        if process.returncode == 0:
            break
    killed_seconds = time.monotonic() - started

    largest = 0.0
    compared = 0
    for path in steps_files:
        for record in read_steps(path):
            expected = reference.loc[record["step"]]
            for column in LOSS_TERMS:
                largest = max(largest, abs(record[column] - float(expected[column])))
            compared += 1
    final = max((r["step"] for p in steps_files for r in read_steps(p)), default=0)

    print("== kill anywhere, resume with training.resume=latest")
    print(f"run: {args.steps} optimiser steps, checkpoint every {args.interval:g} s, "
          f"{int((samples['split'] == 'train').sum())} train samples; reference "
          f"{reference_seconds:.0f} s, killed run {killed_seconds:.0f} s")
    print(f"kills (SIGKILL): {kills}")
    print(f"processes: {len(steps_files)}; resumes with a checkpoint: {resumes}")
    print(f"resumes that continued from the newest loadable checkpoint: {resumed_latest}"
          f"/{resumes}")
    print(f"failed processes (other than killed): {len(failures)}")
    for failure in failures:
        print("  " + failure)
    print(f"last step reached: {final} of {args.steps}; step records compared: {compared}")
    print(f"largest |loss term - uninterrupted| over every step of every process: "
          f"{largest:.3g}")


if __name__ == "__main__":
    main()
