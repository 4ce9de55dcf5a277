"""Subprocess worker for the signal test: trains until a signal arrives.

    python _train_worker.py <base_model_dir> <samples.jsonl> <params.json> <ready_file>

Writes <ready_file> after the first optimiser step; on SIGTERM/SIGINT the loop saves an
emergency checkpoint and this process exits with ``TrainingInterrupted.exit_code``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd

from so8t_kedro.training.checkpoint import TrainingInterrupted
from so8t_kedro.training.loop import train_so8t


def main() -> None:
    base_dir, samples_path, params_path, ready = sys.argv[1:5]
    samples = pd.read_json(samples_path, lines=True, dtype=False)
    params = json.loads(Path(params_path).read_text())

    def on_step(report):
        Path(ready).write_text(str(report.step))
        time.sleep(0.5)  # give the test time to signal while training is under way

    try:
        train_so8t(base_dir, samples, params, checkpoint_dir=params["checkpoint"]["dir"],
                   on_step=on_step)
    except TrainingInterrupted as stop:
        sys.exit(stop.exit_code)
    sys.exit(0)  # finished without being signalled: the test fails on the exit code


if __name__ == "__main__":
    main()
