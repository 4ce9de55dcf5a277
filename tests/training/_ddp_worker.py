"""One process of a multi-process training run, started by ``accelerate launch``.

    accelerate launch --cpu --num_processes 2 _ddp_worker.py BASE SAMPLES.jsonl PARAMS.json OUT

Each process trains with ``train_so8t`` and writes ``OUT/rank<r>.json``: its history, the
per-micro-batch loss terms it computed itself (before any averaging over processes), how
many gradient all-reduces DDP ran (a counting communication hook), a digest of its trainable
weights at the end, and how it ended (``finished`` or the signal that stopped it). After its
first optimiser step it writes ``OUT/ready<r>`` with its pid and then sleeps a little after
each step, so that a test can signal one process while training is under way.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from accelerate import Accelerator
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel

from so8t_kedro.training import loop
from so8t_kedro.training.checkpoint import TrainingInterrupted

REDUCTIONS: list[int] = []  # bucket index of each all-reduce DDP ran
MICRO_TERMS: list[list[float]] = []  # this process's own loss terms, per micro-batch


def _count_reductions(state, bucket):
    REDUCTIONS.append(bucket.index())
    return allreduce_hook(state, bucket)


def _prepare_model_with_a_counting_hook(original):
    def prepare_model(self, model, *args, **kwargs):
        model = original(self, model, *args, **kwargs)
        if isinstance(model, DistributedDataParallel):
            model.register_comm_hook(None, _count_reductions)
        return model

    return prepare_model


def _recording_losses(original):
    def losses(*args, **kwargs):
        terms = original(*args, **kwargs)
        MICRO_TERMS.append([float(terms[k].detach()) for k in loop.LOSS_TERMS])
        return terms

    return losses


def main() -> None:
    base_dir, samples_path, params_path, out = sys.argv[1:5]
    out = Path(out)
    rank = int(os.environ["RANK"])
    samples = pd.read_json(samples_path, lines=True, dtype=False)
    params = json.loads(Path(params_path).read_text())
    Accelerator.prepare_model = _prepare_model_with_a_counting_hook(Accelerator.prepare_model)
    loop._losses = _recording_losses(loop._losses)
    record: dict = {"rank": rank, "pid": os.getpid()}

    def on_step(report):
        if report.step == 1:
            (out / f"ready{rank}").write_text(str(os.getpid()))
        if params.get("pause_after_step_seconds"):
            time.sleep(params["pause_after_step_seconds"])

    try:
        result = loop.train_so8t(base_dir, samples, params,
                                 checkpoint_dir=params["checkpoint"]["dir"], on_step=on_step)
        model, history, record["ended"] = result.model, result.history, "finished"
        record["session_dir"] = str(result.session_dir)
    except TrainingInterrupted as stop:
        model, history = None, None
        record.update(ended=stop.signal_name, exit_code=stop.exit_code,
                      checkpoint=str(stop.checkpoint_path))
    if model is not None:
        digest = hashlib.sha256()
        for name, tensor in sorted(loop.trainable_state(model).items()):
            digest.update(name.encode() + tensor.numpy().tobytes())
        record["weights"] = digest.hexdigest()
        record["history"] = history.to_dict(orient="list")
    record.update(reductions=REDUCTIONS, micro_terms=MICRO_TERMS)
    (out / f"rank{rank}.json").write_text(json.dumps(record))
    if "exit_code" in record:
        sys.exit(record["exit_code"])


if __name__ == "__main__":
    torch.set_num_threads(1)  # two processes share the CI machine's cores
    main()
