"""Builders shared by the evaluation and ab_test tests: prediction tables and catalogs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from kedro.io import DataCatalog, MemoryDataset
from kedro_datasets.matplotlib import MatplotlibDataset
from kedro_datasets.text import TextDataset

from so8t_kedro.decision.scoring import predictions_table
from so8t_kedro.labels import LABELS
from tests.helpers.catalog import PersistedMemoryDataset
from tests.helpers.project import project_parameters


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
