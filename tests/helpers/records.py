"""Record tables for the split and near-duplicate tests."""

from __future__ import annotations

import pandas as pd

from so8t_kedro.labels import LABELS
from so8t_kedro.records.schema import NEAR_DUPLICATE_GROUP_COLUMNS, RECORD_COLUMNS
from tests.helpers.project import base_parameters

COUNTS = {"ALLOW": 400, "ESCALATION": 300, "DENY": 200, "REFUSE": 100}
# Every record its own group (the texts of unique_records are near duplicates of one
# another, so a test that wants them apart says so).
NO_GROUPS = pd.DataFrame(columns=NEAR_DUPLICATE_GROUP_COLUMNS)


def unique_records(counts: dict[str, int]) -> pd.DataFrame:
    """``counts[label]`` records per label, one text each, in the record contract."""
    rows = [
        {
            "id": f"{label}-{i}",
            "text": f"{label} text {i}",
            "label": label,
            "label_id": LABELS.index(label),
            "language": "en",
            "domain": "d",
            "source": f"f.jsonl:{k}",
        }
        for k, (label, i) in enumerate((label, i) for label, n in counts.items() for i in range(n))
    ]
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


def shipped_split_settings() -> dict:
    """conf/base's ``data_processing.split`` as :func:`so8t_kedro.records.split.split_records`
    takes it (the fractions of val and test; train is the rest)."""
    split = base_parameters("data_processing")["split"]
    return {key: split[key] for key in
            ("val_fraction", "test_fraction", "random_state", "allow_unstratified_fallback")}


def exit_worker(*_args) -> None:
    """Stands in for a PII worker's chunk function: the process dies as in a native crash."""
    import os

    os._exit(70)
