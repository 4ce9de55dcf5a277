"""Fixtures and helpers for the data_processing tests."""

from __future__ import annotations

import copy
import json
import random
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from kedro.config import OmegaConfigLoader

from so8t_kedro.labels import LABELS
from so8t_kedro.pipelines.data_processing import nodes
from so8t_kedro.records.cleaning import clean_records
from so8t_kedro.records.deduplication import deduplicate_records
from so8t_kedro.records.quality_report import data_quality_report, kept_records_summary
from so8t_kedro.records.schema import RECORD_COLUMNS

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"
SEED_NAME = "so8t_seed_dataset.jsonl"


def jsonl(*records: Any) -> bytes:
    """JSONL bytes: dicts / lists / scalars are JSON-encoded, ``bytes`` are taken as is."""
    lines = [
        r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode() for r in records
    ]
    return b"".join(line + b"\n" for line in lines)


def distinct_text(label: str, i: int) -> str:
    """``"<label> request <20 random letters>"``, seeded by label and number: two of them
    share only the prefix's trigrams (Jaccard about 0.2, far below any sane threshold)."""
    rng = random.Random(f"{label}-{i}")
    return f"{label} request {''.join(rng.choices(string.ascii_lowercase, k=20))}"


def balanced_records(
    n_per_label: int, prefix: str = "r", language: str | None = None
) -> list[dict]:
    """``n_per_label`` distinct flat records per label, no two of them near duplicates."""
    out = []
    for label in LABELS:
        for i in range(n_per_label):
            record = {
                "id": f"{prefix}-{label}-{i}",
                "text": distinct_text(label, i),
                "label": label,
                "domain": "general",
            }
            if language:
                record["language"] = language
            out.append(record)
    return out


@pytest.fixture(scope="session")
def shipped_parameters() -> dict[str, Any]:
    """Every shipped parameter as Kedro resolves them (``${pii}`` interpolated)."""
    return OmegaConfigLoader(str(CONF_DIR), base_env="base", default_run_env="local")["parameters"]


@pytest.fixture
def params(shipped_parameters) -> dict[str, Any]:
    """The shipped ``data_processing`` parameters (a fresh copy per test)."""
    return copy.deepcopy(shipped_parameters["data_processing"])


@pytest.fixture
def run_until_report(params) -> Callable[..., dict[str, Any]]:
    """Run ingest -> clean -> dedup -> groups -> quarantine (-> split) -> report on in-memory files.

    Returns every intermediate output by name. With ``split=False`` every unique record
    goes to ``train`` (for inputs too small to split).
    """

    def run(
        seed: bytes = b"",
        partitions: dict[str, bytes] | None = None,
        split: bool = False,
        **overrides: dict[str, Any],
    ) -> dict[str, Any]:
        p = copy.deepcopy(params)
        for section, values in overrides.items():
            p[section].update(values)
        loaders = {k: (lambda v=v: v) for k, v in (partitions or {}).items()}
        out: dict[str, Any] = {}
        out["raw"], out["q_ingest"], out["summary"] = nodes.ingest_raw_records(
            loaders, seed, p["ingest"]
        )
        out["clean"], out["q_clean"], out["pii"] = clean_records(out["raw"], p["clean"])
        out["unique"], out["duplicates"], out["q_conflict"] = deduplicate_records(
            out["clean"]
        )
        out["quarantine"] = nodes.collect_quarantined_records(
            out["q_ingest"], out["q_clean"], out["q_conflict"], p["clean"]
        )
        out["groups"], out["group_summary"] = nodes.group_near_duplicates(
            out["unique"], p["near_duplicates"]
        )
        if split:
            out["train"], out["val"], out["test"], out["split"] = nodes.split_records(
                out["unique"], out["groups"], out["group_summary"], p["split"]
            )
        else:
            empty = out["unique"].iloc[0:0][RECORD_COLUMNS]
            out["train"], out["val"], out["test"] = (
                out["unique"][RECORD_COLUMNS],
                empty,
                empty,
            )
            out["split"] = {
                "split": {"stratified": False},
                **kept_records_summary(
                    out["train"], out["val"], out["test"], out["groups"], out["group_summary"]
                ),
            }
        out["report"] = data_quality_report(
            out["summary"], out["pii"], out["quarantine"], out["duplicates"], out["split"]
        )
        return out

    return run


def reasons(quarantine: pd.DataFrame) -> list[tuple[int, str]]:
    """``[(line, reason), ...]`` of a quarantine table, in order."""
    return list(zip(quarantine["line"].tolist(), quarantine["reason"].tolist(), strict=True))
