"""Subprocess worker + model-free toy loop for the checkpoint tests (no kedro, no model).

Run as a script::

    python _checkpoint_worker.py slow-save <session_dir> <marker>
        saves rolling step 1, then starts saving rolling step 2 with a write that writes half
        of optimizer.pt, creates <marker> and blocks until killed.
    python _checkpoint_worker.py train <root> <ready>
        runs the toy loop under graceful_shutdown; writes <ready> once handlers are installed
        and a few steps are done; on SIGINT/SIGTERM saves an emergency checkpoint and exits
        with TrainingInterrupted.exit_code (130 / 143).

Imported by the tests for the toy loop itself (:class:`ToyLoop`).
"""

from __future__ import annotations

import io
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from so8t_kedro.training import checkpoint as ck
from so8t_kedro.training.state import (
    DataPosition,
    TrainingState,
    capture_rng_state,
    restore_rng_state,
)

N_SAMPLES, BATCH, FEATURES = 24, 4, 8
STEPS_PER_EPOCH = N_SAMPLES // BATCH
DATA_SEED = 1234


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class ToyLoop:
    """nn.Linear + AdamW + warm-up/cosine, shuffled data, torch/numpy/python randomness."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(N_SAMPLES, FEATURES, generator=g)
        self.y = torch.randn(N_SAMPLES, 1, generator=g)
        self.model = nn.Linear(FEATURES, 1)  # init from the global torch RNG
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-2, weight_decay=0.01)
        warm = torch.optim.lr_scheduler.LinearLR(self.optimizer, start_factor=0.1, total_iters=3)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=20)
        self.scheduler = torch.optim.lr_scheduler.SequentialLR(
            self.optimizer, [warm, cosine], milestones=[3])
        self.step = self.epoch = self.index = 0
        self.params = {"lr": 1e-2, "batch": BATCH, "note": "toy"}

    def order(self) -> torch.Tensor:
        return torch.randperm(N_SAMPLES, generator=torch.Generator().manual_seed(
            DATA_SEED + self.epoch))

    def train_step(self) -> float:
        idx = self.order()[self.index * BATCH:(self.index + 1) * BATCH]
        x, y = self.x[idx], self.y[idx]
        keep = (torch.rand_like(x) > 0.2).float() / 0.8                     # dropout-like
        noise = torch.from_numpy(np.random.randn(*x.shape).astype(np.float32)) * 0.01
        scale = 1.0 + 0.1 * random.random()
        loss = nn.functional.mse_loss(self.model(x * keep + noise) * scale, y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.index += 1
        if self.index == STEPS_PER_EPOCH:
            self.epoch, self.index = self.epoch + 1, 0
        return loss.item()

    def state(self) -> TrainingState:
        return TrainingState(
            trainable=dict(self.model.state_dict()), optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(), rng=capture_rng_state(),
            step=self.step, epoch=self.epoch,
            position=DataPosition(index=self.index, seed=DATA_SEED), params=self.params)

    def restore(self, state: TrainingState) -> None:
        self.model.load_state_dict(state.trainable)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        restore_rng_state(state.rng)
        self.step, self.epoch, self.index = state.step, state.epoch, state.position.index
        assert state.position.seed == DATA_SEED


def slow_save(session_dir: str, marker: str) -> None:
    manager = ck.CheckpointManager(session_dir, interval_seconds=0)
    seed_all(0)
    loop = ToyLoop()
    loop.train_step()
    manager.save("rolling", loop.state())

    def blocking_torch_save(obj, path):
        buf = io.BytesIO()
        torch.save(obj, buf)
        data = buf.getvalue()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
        Path(marker).write_text(str(path))
        while True:  # wait to be SIGKILLed mid-save
            time.sleep(60)

    ck._torch_save = blocking_torch_save
    loop.train_step()
    manager.save("rolling", loop.state())
    raise AssertionError("unreachable: the blocking save never returns")


def train(root: str, ready: str) -> int:
    seed_all(0)
    loop = ToyLoop()
    manager = ck.CheckpointManager.create(root, params=loop.params, interval_seconds=3600)
    try:
        with ck.graceful_shutdown() as stop:
            while True:
                loop.train_step()
                if loop.step == 3:
                    Path(ready).write_text(str(manager.session_dir))
                if stop.requested:
                    raise manager.interrupt(loop.state(), stop)
                if manager.should_save():
                    manager.save("rolling", loop.state())
    except ck.TrainingInterrupted as exc:
        return exc.exit_code


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "slow-save":
        slow_save(*args)
    elif mode == "train":
        sys.exit(train(*args))
    else:
        sys.exit(f"unknown mode {mode!r}")
