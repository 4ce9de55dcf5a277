"""Builders shared by the tests that score and evaluate (decision, records, the evaluation
and ab_test pipelines): records, prediction tables, catalogs and what the reports embed."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from kedro.io import DataCatalog, MemoryDataset
from kedro_datasets.matplotlib import MatplotlibDataset
from kedro_datasets.text import TextDataset

from so8t_kedro.decision.scoring import predictions_table
from so8t_kedro.labels import LABELS
from tests.helpers.catalog import PersistedMemoryDataset
from tests.helpers.project import SEED_DATA, project_parameters

#: ``params:scoring`` for the tiny model on the CPU.
SCORING = {"batch_size": 1, "max_probe_tokens": 512, "quantization": None, "device": "cpu"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def clean_params() -> dict:
    """``params:data_processing.clean``: external test sets are cleaned by the same rules."""
    return project_parameters()["data_processing"]["clean"]


def records_frame(labels: list[str], prefix: str = "r") -> pd.DataFrame:
    return pd.DataFrame({
        "id": [f"{prefix}{i}" for i in range(len(labels))],
        "text": [f"request {i}" for i in range(len(labels))],
        "label": labels,
        "label_id": [LABELS.index(label) for label in labels],
        "language": "ja",
        "domain": "general",
        "source": [f"test.jsonl:{i + 1}" for i in range(len(labels))],
    })


def predictions(labels: list[str], scores: np.ndarray, latency_ms: float | np.ndarray = 10.0,
                model: str = "m", prefix: str = "r") -> pd.DataFrame:
    """A predictions table for ``labels`` with the given [N, 4] ``scores``."""
    latency = np.broadcast_to(np.asarray(latency_ms, dtype=float), (len(labels),)).copy()
    return predictions_table(records_frame(labels, prefix), np.asarray(scores, dtype=float),
                             latency, model=model, base_model_dir="/models/base",
                             adapter_dir=None)


def confident_scores(predicted: list[str], margin: float) -> np.ndarray:
    """Scores whose softmax puts most mass on ``predicted`` (``margin`` nats ahead)."""
    scores = np.zeros((len(predicted), len(LABELS)))
    for row, label in enumerate(predicted):
        scores[row, LABELS.index(label)] = margin
    return scores


def plot_datasets(tmp_path: Path, report: str, plots: list[str]) -> dict:
    """@figure (MatplotlibDataset) + @png (bytes) entries on one file per plot, as in the
    project's catalog."""
    datasets: dict = {}
    for plot in plots:
        path = str(tmp_path / report / f"{plot}.png")
        datasets[f"{report}_{plot}@figure"] = MatplotlibDataset(filepath=path)
        datasets[f"{report}_{plot}@png"] = TextDataset(
            filepath=path, fs_args={"open_args_load": {"mode": "rb"}})
    return datasets


def memory_catalog(inputs: dict, outputs: list[str], extra: dict | None = None) -> DataCatalog:
    datasets = {name: MemoryDataset(value) for name, value in inputs.items()}
    datasets.update({name: PersistedMemoryDataset() for name in outputs})
    datasets.update(extra or {})
    return DataCatalog(datasets=datasets)


def embedded_images(page: str) -> list[bytes]:
    """The PNG images an HTML report embeds as data URIs, decoded."""
    return [base64.b64decode(data)
            for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def _seed_rows() -> list[dict]:
    return [json.loads(line) for line in SEED_DATA.read_text().splitlines()]


def _records(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["label_id"] = frame["label"].map(LABELS.index)
    frame["source"] = "seed"
    return frame.reset_index(drop=True)


def seed_sample_records() -> pd.DataFrame:
    """Every 40th seed request of each label, labels in ``LABELS`` order: a small set to
    score (split in two, a test and a validation set)."""
    rows = _seed_rows()
    return _records([r for label in LABELS for r in rows if r["label"] == label][::40])


def seed_records_except(held_out: pd.DataFrame) -> pd.DataFrame:
    """Every seed request that ``held_out`` leaves out."""
    ids = set(held_out["id"])
    return _records([r for r in _seed_rows() if r["id"] not in ids])
