"""The project's configuration as a run reads it; a project copy's input data."""

import copy
import json
from functools import cache
from pathlib import Path

import pandas as pd
from kedro.config import OmegaConfigLoader

from tests.helpers.sft import train_records

CONF = Path(__file__).resolve().parents[2] / "conf"
SEED_DATA = CONF.parent / "data/01_raw/so8t_seed_dataset.jsonl"
SFT_DATASET = "data/05_model_input/thinking_sft/thinking_sft_dataset.jsonl"
TRAIN_RECORDS = "data/03_primary/four_class_train.jsonl"
# The save version of the SFT samples a test writes (before any run's).
SFT_VERSION = "2026-01-01T00.00.00.000Z"


@cache
def project_parameters() -> dict:
    """The project's parameters (every parameters*.yml of conf/base and conf/local merged,
    interpolations resolved)."""
    return OmegaConfigLoader(conf_source=str(CONF), base_env="base",
                             default_run_env="local")["parameters"]


@cache
def _base_parameters() -> dict:
    return OmegaConfigLoader(conf_source=str(CONF), base_env="base",
                             default_run_env="base")["parameters"]


def base_parameters(section: str | None = None) -> dict:
    """A fresh deep copy of conf/base's parameters (no conf/local), or of one top-level
    section: what a test passes to a node when it wants the shipped values."""
    params = copy.deepcopy(_base_parameters())
    return params if section is None else params[section]


def write_sft_samples(project: Path, samples: pd.DataFrame) -> None:
    """The SFT samples as the catalog's thinking_sft_dataset and their train requests as its
    train_records (the training pipeline's inputs), one version each."""
    for dataset, frame in ((SFT_DATASET, samples), (TRAIN_RECORDS, train_records(samples))):
        path = project / dataset / SFT_VERSION / Path(dataset).name
        path.parent.mkdir(parents=True)
        frame.to_json(path, orient="records", lines=True, force_ascii=False)


def seed_records(per_label: int) -> list[dict]:
    """The shipped seed dataset's first ``per_label`` requests of each label."""
    from so8t_kedro.labels import LABELS

    rows = [json.loads(line) for line in SEED_DATA.read_text("utf-8").splitlines()]
    return [row for label in LABELS for row in [r for r in rows if r["label"] == label][:per_label]]


def use_seed_subset(project: Path, per_label: int) -> int:
    """Replace a project copy's seed dataset by :func:`seed_records` (``per_label`` of each
    label), for a test of the pipelines' wiring rather than of the data (every stage runs
    on a tenth of the seed in a tenth of the time). Returns the count."""
    picked = seed_records(per_label)
    (project / "data/01_raw" / SEED_DATA.name).write_text(
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in picked), "utf-8")
    return len(picked)
