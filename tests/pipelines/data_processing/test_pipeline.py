"""The data_processing pipeline end to end: a runner slice on fixtures and a KedroSession run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from matplotlib.figure import Figure

from so8t_kedro.labels import LABELS
from so8t_kedro.pipelines.data_processing import create_pipeline
from so8t_kedro.records.schema import RECORD_COLUMNS

from .conftest import SEED_NAME, balanced_records, distinct_text, jsonl


class PersistedMemoryDataset(MemoryDataset):
    """Stands in for a persisted catalog entry: keeps its data when the runner releases it."""

    def _release(self) -> None:
        pass


OUTPUTS = [
    "train_records",
    "val_records",
    "test_records",
    "quarantined_records",
    "duplicate_records",
    "near_duplicate_groups",
    "data_quality_report",
    "label_distribution_plot",
]


def test_pipeline_shape():
    pipeline = create_pipeline()
    assert pipeline.inputs() == {
        "four_class_partitions",
        "seed_dataset",
        "params:data_processing.ingest",
        "params:data_processing.clean",
        "params:data_processing.near_duplicates",
        "params:data_processing.split",
    }
    assert set(OUTPUTS) <= pipeline.all_outputs()
    assert pipeline.outputs() == {"data_quality_report", "label_distribution_plot"}
    assert {n.name for n in pipeline.nodes} == {
        "ingest_raw_records",
        "clean_records",
        "deduplicate_records",
        "group_near_duplicates",
        "collect_quarantined_records",
        "split_records",
        "build_data_quality_report",
        "plot_label_distribution",
    }
    assert all("data_processing" in n.tags for n in pipeline.nodes)


def test_pipeline_slice_on_an_in_memory_catalog(params):
    seed = jsonl(*balanced_records(25, prefix="seed"), b"", b"{broken")
    partitions = {
        "four_class_20251108.jsonl": jsonl(
            *[
                {
                    "quadruple_classification": {"four_class_label": label.lower()},
                    "original_text": f"nested {distinct_text(label, 100 + i)}",
                }
                for label in LABELS
                for i in range(5)
            ],
            {"text": distinct_text("ALLOW", 3), "label": "ALLOW"},  # duplicate of the seed
            {"text": "no label here"},
        ),
        "readme.md": b"# not data",
    }
    catalog = DataCatalog(
        datasets={
            "four_class_partitions": MemoryDataset(
                {k: (lambda v=v: v) for k, v in partitions.items()}, copy_mode="assign"
            ),
            "seed_dataset": MemoryDataset(seed),
            "params:data_processing.ingest": MemoryDataset(params["ingest"]),
            "params:data_processing.clean": MemoryDataset(params["clean"]),
            "params:data_processing.near_duplicates": MemoryDataset(params["near_duplicates"]),
            "params:data_processing.split": MemoryDataset(params["split"]),
            **{name: PersistedMemoryDataset(copy_mode="assign") for name in OUTPUTS},
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)

    train, val, test = (catalog.load(f"{s}_records") for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (96, 12, 12)
    for frame in (train, val, test):
        assert list(frame.columns) == RECORD_COLUMNS
        assert frame["label"].value_counts().to_dict() == {
            label: len(frame) // 4 for label in LABELS
        }
    quarantine = catalog.load("quarantined_records")
    assert sorted(zip(quarantine["source"], quarantine["reason"], strict=True)) == [
        ("four_class_20251108.jsonl:22", "missing_label"),
        (f"{SEED_NAME}:102", "malformed_json"),
    ]
    duplicates = catalog.load("duplicate_records")
    assert duplicates[["source", "duplicate_of_id"]].values.tolist() == [
        ["four_class_20251108.jsonl:21", "seed-ALLOW-3"]
    ]
    report = catalog.load("data_quality_report")
    assert report["totals"] == {
        "lines_read": 124,
        "blank_lines": 1,
        "kept": 120,
        "quarantined": 2,
        "duplicates": 1,
    }
    assert report["ignored_files"] == ["readme.md"]
    assert json.loads(json.dumps(report)) == report  # JSON-serialisable as is
    assert isinstance(catalog.load("label_distribution_plot"), Figure)


@pytest.mark.slow
def test_kedro_session_run_on_the_shipped_seed(project_root: Path, kedro_project: Path):
    """`kedro run --pipelines=data_processing` in a copy of the project under tmp_path."""
    from kedro.framework.session import KedroSession

    tmp_path = kedro_project
    seed_file = project_root / "data/01_raw/so8t_seed_dataset.jsonl"
    raw = tmp_path / "data/01_raw"
    (raw / "four_class/four_class_extra.jsonl").write_bytes(
        jsonl(
            {
                "quadruple_classification": {"four_class_label": "DENY"},
                "instruction": "この人の住所を調べて",
                "input": "〒100-0001 東京都千代田区千代田1-1",
            },
            b"\xff not utf-8",
        )
    )
    (raw / "four_class/.gitkeep").touch()

    with KedroSession.create(project_path=tmp_path) as session:
        session.run(pipeline_names=["data_processing"])

    def latest(relative: str) -> Path:
        versions = sorted((tmp_path / "data" / relative).iterdir())
        assert versions, relative
        return versions[-1] / Path(relative).name

    report = json.loads(latest("08_reporting/data_processing/data_quality_report.json").read_text())
    assert latest("08_reporting/data_processing/label_distribution.png").stat().st_size > 10_000
    splits = {
        s: pd.read_json(latest(f"03_primary/four_class_{s}.jsonl"), lines=True, dtype=False)
        for s in ("train", "val", "test")
    }
    quarantine = pd.read_json(latest("02_intermediate/quarantined_records.jsonl"), lines=True)
    assert latest("02_intermediate/duplicate_records.jsonl").exists()

    totals = report["totals"]
    seed_lines = len(seed_file.read_bytes().splitlines())
    assert totals["lines_read"] == seed_lines + 2
    assert totals["kept"] == sum(len(f) for f in splits.values())
    assert totals["quarantined"] == len(quarantine)
    assert ("four_class_extra.jsonl", 2, "invalid_utf8") in set(
        zip(quarantine["file"], quarantine["line"], quarantine["reason"], strict=True)
    )
    assert report["ignored_files"] == [".gitkeep"]
    assert report["pii_replacements"]["by_type"]["ADDRESS"] >= 1
    assert report["pii_replacements"]["by_file"]["four_class_extra.jsonl"] == {"ADDRESS": 1}

    kept = pd.concat(splits.values(), ignore_index=True)
    assert list(kept.columns) == RECORD_COLUMNS
    assert kept["id"].is_unique
    seed_kept = kept[kept["source"].str.startswith(f"{SEED_NAME}:")]
    assert len(seed_kept) >= 800
    shares = seed_kept["label"].value_counts(normalize=True)
    assert set(shares.index) == set(LABELS)
    assert shares.min() >= 0.15, shares.to_dict()
    assert set(kept["language"]) <= {"ja", "en"}
    assert (kept["label"].map(LABELS.index) == kept["label_id"]).all()
    assert report["split"]["stratified"] is True
    for name, frame in splits.items():
        share = frame["label"].value_counts(normalize=True)
        assert (share - shares).abs().max() < 0.03, name  # stratified: same mix per split
