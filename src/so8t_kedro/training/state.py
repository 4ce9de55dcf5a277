"""The training state exact resume needs, in memory: where the loop is in its data, the
trainable tensors, the optimiser / scheduler / scaler state dicts and the global RNG states.

Framework-free (torch + numpy + stdlib; never kedro). The loop builds a
:class:`TrainingState` at an optimiser-step boundary and restores one on resume; how a
state is written to and read from disk, and which checkpoint a run resumes, is
:mod:`so8t_kedro.training.checkpoint`.

RNG states: :func:`capture_rng_state` takes python ``random``, numpy's global generator,
torch CPU and every CUDA device's state; :func:`restore_rng_state` sets them back. Under
DDP only rank 0's states are saved, which is enough because the loop reseeds every rank at
each optimiser step from (seed, rank, position).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass
class DataPosition:
    """Where the loop is in the current epoch's data order.

    ``index``: the next sample/batch index into the epoch's order; ``seed``: the seed the
    order (permutation) is built from, so the same order can be rebuilt on resume.
    """

    index: int = 0
    seed: int = 0


@dataclass
class TrainingState:
    """Everything exact resume needs (the checkpoint files that hold each part:
    :mod:`so8t_kedro.training.checkpoint`)."""

    trainable: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None
    scheduler: dict[str, Any] | None
    rng: dict[str, Any]
    step: int
    epoch: int = 0
    position: DataPosition = field(default_factory=DataPosition)
    params: dict[str, Any] = field(default_factory=dict)
    scaler: dict[str, Any] | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states: python ``random``, numpy, torch CPU, torch CUDA (all devices)."""
    version, internal, gauss_next = random.getstate()
    name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {"bit_generator": str(name), "key": [int(k) for k in key], "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Set the global RNG states from :func:`capture_rng_state` (or a loaded checkpoint)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state((npy["bit_generator"], np.asarray(npy["key"], dtype=np.uint32),
                         npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    cuda = list(state.get("cuda") or [])
    if cuda:
        if not torch.cuda.is_available():
            log.warning("Checkpoint has CUDA RNG states but CUDA is not available; skipped.")
        else:
            count = torch.cuda.device_count()
            if count != len(cuda):
                log.warning("Checkpoint has %d CUDA RNG states, this machine %d devices; "
                            "restoring the first %d.", len(cuda), count, min(count, len(cuda)))
            for device, rng in enumerate(cuda[:count]):
                torch.cuda.set_rng_state(rng.cpu(), device)
