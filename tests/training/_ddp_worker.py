"""One process of a multi-process training loop, started by ``accelerate launch``.

    accelerate launch --multi_gpu --num_processes 2 _ddp_worker.py BASE SAMPLES.jsonl PARAMS.json OUT

Each process trains with ``train_so8t`` and writes ``OUT/rank<r>.json``: its history, the
per-micro-batch loss terms it computed itself (before any averaging over processes) and the
bucket index of each gradient all-reduce DDP ran (a counting communication hook).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import torch
from accelerate import Accelerator
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel

from so8t_kedro.training import loop

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
    rank = int(os.environ["RANK"])
    samples = pd.read_json(samples_path, lines=True, dtype=False)
    params = json.loads(Path(params_path).read_text())
    Accelerator.prepare_model = _prepare_model_with_a_counting_hook(Accelerator.prepare_model)
    loop._losses = _recording_losses(loop._losses)
    result = loop.train_so8t(base_dir, samples, params,
                             checkpoint_dir=params["checkpoint"]["dir"])
    record = {"rank": rank, "history": result.history.to_dict(orient="list"),
              "reductions": REDUCTIONS, "micro_terms": MICRO_TERMS}
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    torch.set_num_threads(1)  # two processes share the CI machine's cores
    main()
