"""Runs an Optuna study in its own process, so that a test can kill it mid-trial.

Usage: python _hpo_worker.py BASE_DIR SAMPLES.jsonl TRAINING.json HPO.json STORAGE_URL
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from so8t_kedro.training.hpo import run_study, study_storage


def main() -> None:
    base_dir, samples_path, training_path, hpo_path, url = sys.argv[1:6]
    samples = pd.read_json(samples_path, lines=True, dtype=False)
    hpo_params = json.loads(Path(hpo_path).read_text())
    run_study(base_dir, samples, json.loads(Path(training_path).read_text()), hpo_params,
              study_storage(url, hpo_params))


if __name__ == "__main__":
    main()
