"""Tests of the in-memory training state: the data position and the global RNG states.

Writing a state to disk and reading it back (RNG states included) is tested with the
checkpoints (test_checkpoint.py).
"""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import torch

from so8t_kedro.training import state as st
from so8t_kedro.training.state import (
    DataPosition,
    TrainingState,
    capture_rng_state,
    restore_rng_state,
)


def _draws() -> tuple:
    return random.random(), random.gauss(0, 1), np.random.randn(3).tolist(), torch.rand(3)


def test_restore_replays_every_generator_including_cached_gaussians():
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    np.random.randn()  # numpy now holds a cached gaussian (has_gauss=1)
    random.gauss(0, 1)  # python now holds gauss_next
    saved = capture_rng_state()
    expected = _draws()
    _draws()  # move every generator on
    restore_rng_state(saved)
    again = _draws()
    assert again[:3] == expected[:3]
    assert torch.equal(again[3], expected[3])


def test_captured_python_and_numpy_states_are_plain_json():
    saved = capture_rng_state()
    for key in ("python", "numpy"):
        assert json.loads(json.dumps(saved[key])) == saved[key]
    assert saved["torch"].dtype == torch.uint8
    assert isinstance(saved["cuda"], list)


def test_cuda_states_without_cuda_are_skipped_with_a_warning(monkeypatch, caplog):
    saved = capture_rng_state()
    saved["cuda"] = [torch.get_rng_state()]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger=st.__name__):
        restore_rng_state(saved)
    assert any("CUDA is not available" in r.getMessage() for r in caplog.records)


def test_state_defaults():
    state = TrainingState(trainable={}, optimizer=None, scheduler=None, rng={}, step=3)
    assert (state.epoch, state.position, state.params) == (0, DataPosition(0, 0), {})
    assert state.scaler is None and state.fingerprint == {}
    assert state.position is not TrainingState({}, None, None, {}, 0).position
