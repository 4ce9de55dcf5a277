"""Runs an Optuna study in its own process, so that a test can kill it mid-trial.

Usage: python _hpo_worker.py BASE_DIR SAMPLES.jsonl TRAINING.json HPO.json STORAGE_URL

Trial 1 holds for HOLD_SECONDS after its second report (its heartbeat thread keeps it
RUNNING): the test kills the process in that window, which a fast machine would otherwise
run through between two polls.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pandas as pd

from so8t_kedro.training.hpo import run_study, study_storage

HOLD_SECONDS = 120
_report = optuna.trial.Trial.report
_reports: Counter[int] = Counter()


def _report_then_hold(trial: optuna.trial.Trial, value: float, step: int) -> None:
    _report(trial, value, step)
    _reports[trial.number] += 1
    if trial.number == 1 and _reports[1] == 2:
        time.sleep(HOLD_SECONDS)


def main() -> None:
    base_dir, samples_path, training_path, hpo_path, url = sys.argv[1:6]
    samples = pd.read_json(samples_path, lines=True, dtype=False)
    hpo_params = json.loads(Path(hpo_path).read_text())
    optuna.trial.Trial.report = _report_then_hold
    run_study(base_dir, samples, json.loads(Path(training_path).read_text()), hpo_params,
              study_storage(url, hpo_params))


if __name__ == "__main__":
    main()
