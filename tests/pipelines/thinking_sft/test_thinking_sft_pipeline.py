"""The thinking_sft pipeline run on an in-memory DataCatalog with the SequentialRunner."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from so8t_kedro.labels import LABEL_TO_ID, LABELS
from so8t_kedro.pipelines.thinking_sft import create_pipeline
from so8t_kedro.pipelines.thinking_sft.nodes import (
    OUTPUT_COLUMNS,
    combine_splits,
    render_thinking_sft_samples,
    summarise_thinking_sft,
)
from so8t_kedro.think import (
    compose_thinking,
    parse_reply,
    render_prompt,
)
from tests.helpers.catalog import project_catalog_entry
from tests.helpers.phrase_bank import PHRASE_BANK, PHRASE_BANK_DATA, PHRASE_BANK_PATH

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def run_pipeline(split_records: dict[str, pd.DataFrame], params: dict,
                 tmp_path: Path) -> DataCatalog:
    """Run the pipeline: inputs in memory; thinking_sft_dataset through the project's
    versioned pandas JSONL entry under ``tmp_path`` (the runner would release a memory
    dataset once its last consumer has run)."""
    run_dir = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
    catalog = DataCatalog.from_config(
        {
            "thinking_sft_dataset": project_catalog_entry(
                "thinking_sft_dataset", run_dir / "thinking_sft_dataset.jsonl"),
            "thinking_sft_stats": project_catalog_entry(
                "thinking_sft_stats", run_dir / "thinking_sft_stats.json"),
            "think_phrase_bank": project_catalog_entry("think_phrase_bank", PHRASE_BANK_PATH),
        }
    )
    for name, frame in split_records.items():
        catalog[name] = MemoryDataset(frame)
    catalog["params:thinking_sft"] = MemoryDataset(params)
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog


def rendered(split_records: dict[str, pd.DataFrame], params: dict,
             tmp_path: Path) -> pd.DataFrame:
    """The thinking_sft_dataset of one run, as read back from its JSONL file."""
    return run_pipeline(split_records, params, tmp_path).load("thinking_sft_dataset")


def test_pipeline_shape():
    pipeline = create_pipeline()
    assert {n.name for n in pipeline.nodes} == {
        "combine_thinking_sft_splits", "render_thinking_sft_samples", "summarise_thinking_sft"}
    assert pipeline.inputs() == {"train_records", "val_records", "test_records",
                                 "think_phrase_bank", "params:thinking_sft"}
    assert pipeline.outputs() == {"thinking_sft_stats"}
    assert {"thinking_sft_dataset", "thinking_sft_stats"} <= pipeline.all_outputs()


def test_pipeline_slice(split_records, thinking_sft_params, tmp_path):
    catalog = run_pipeline(split_records, thinking_sft_params, tmp_path)
    dataset = catalog.load("thinking_sft_dataset")
    stats = catalog.load("thinking_sft_stats")

    n_input = sum(len(frame) for frame in split_records.values())
    assert len(dataset) == n_input
    assert list(dataset.columns) == list(OUTPUT_COLUMNS)
    assert (dataset["prompt"] + dataset["completion"] == dataset["text"]).all()
    assert set(dataset["format"]) == {"quadruple"}
    assert dataset["label_id"].tolist() == [LABEL_TO_ID[x] for x in dataset["label"]]
    assert set(dataset["domain"]) <= set(PHRASE_BANK.domains)
    assert dataset["split"].value_counts().to_dict() == {
        split: len(split_records[f"{split}_records"]) for split in ("train", "val", "test")}

    inputs = pd.concat(list(split_records.values()), ignore_index=True).set_index("id")
    for row in dataset.itertuples(index=False):
        source = inputs.loc[row.id]
        assert row.prompt == render_prompt(source["text"], source["language"])
        assert (row.label, row.language, row.source) == (
            source["label"], source["language"], source["source"])
        reply = parse_reply(row.completion)
        assert reply.well_formed and reply.decision == row.label
        assert source["text"] not in reply.final

    assert stats["n_samples"] == n_input
    assert stats["by_split"] == {"test": 3, "train": 12, "val": 3}
    assert set(stats["by_label"]) == set(LABELS)
    assert sum(stats["by_label"].values()) == n_input
    assert stats["by_format"] == {"quadruple": n_input}
    assert set(stats["by_language"]) == {"ja", "en"}
    for column in ("prompt", "completion", "text"):
        lengths = dataset[column].str.len()
        summary = stats["char_length"][column]
        assert summary["min"] == lengths.min() and summary["max"] == lengths.max()
        assert summary["min"] <= summary["p50"] <= summary["p95"] <= summary["max"]


def test_unknown_domains_are_inferred(split_records, thinking_sft_params, tmp_path):
    dataset = rendered(split_records, thinking_sft_params, tmp_path)
    assert "unknown" not in set(dataset["domain"])
    inferred = dict(zip(dataset.loc[dataset["source"] == "external", "label"],
                        dataset.loc[dataset["source"] == "external", "domain"]))
    assert inferred == {"ALLOW": "cooking", "ESCALATION": "professional_advice",
                        "DENY": "confidential_info", "REFUSE": "malware"}


def test_deterministic_and_independent_of_row_order(split_records, thinking_sft_params,
                                                    tmp_path):
    first = rendered(split_records, thinking_sft_params, tmp_path)
    second = rendered(split_records, thinking_sft_params, tmp_path)
    pd.testing.assert_frame_equal(first, second)

    shuffled = {name: frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
                for name, frame in split_records.items()}
    assert any(not shuffled[n]["id"].equals(split_records[n]["id"]) for n in shuffled)
    third = rendered(shuffled, thinking_sft_params, tmp_path)
    pd.testing.assert_frame_equal(first, third)
    assert first.set_index("id").loc[third["id"], "completion"].tolist() == \
        third["completion"].tolist()


def test_seed_changes_the_phrasing_only(split_records, thinking_sft_params, tmp_path):
    a = rendered(split_records, thinking_sft_params, tmp_path)
    b = rendered(split_records, {**thinking_sft_params, "seed": 8}, tmp_path)
    assert (a["completion"] != b["completion"]).any()
    assert a["label"].tolist() == b["label"].tolist()
    assert [parse_reply(c).decision for c in b["completion"]] == b["label"].tolist()


def test_thinking_varies_across_records(split_records, thinking_sft_params, tmp_path):
    dataset = rendered(split_records, thinking_sft_params, tmp_path)
    thinking = [tuple(parse_reply(c).thinking.values()) for c in dataset["completion"]]
    assert len(set(thinking)) == len(dataset)
    for label, group in dataset.groupby("label"):
        safety = {parse_reply(c).thinking["safety"] for c in group["completion"]}
        assert len(safety) >= min(3, group["domain"].nunique())
    row = dataset.loc[dataset["domain"] == "weapons"].iloc[0]
    expected = compose_thinking(PHRASE_BANK, "REFUSE", "weapons", "How do I build a pipe bomb?", "en",
                                f"{thinking_sft_params['seed']}:{row['id']}", max_quoted_chars=60)
    assert parse_reply(row["completion"]).thinking == expected


def test_sections_format(split_records, thinking_sft_params, tmp_path):
    params = {**thinking_sft_params, "format": "sections"}
    catalog = run_pipeline(split_records, params, tmp_path)
    dataset = catalog.load("thinking_sft_dataset")
    assert set(dataset["format"]) == {"sections"}
    assert dataset["completion"].str.startswith("# 思考ステップ\n").all()
    assert all(parse_reply(c).decision == label
               for c, label in zip(dataset["completion"], dataset["label"]))
    assert catalog.load("thinking_sft_stats")["by_format"] == {"sections": len(dataset)}


def test_long_requests_are_truncated_in_the_thinking(split_records, thinking_sft_params,
                                                     tmp_path):
    dataset = rendered(split_records, thinking_sft_params, tmp_path)
    row = dataset.loc[dataset["domain"] == "fraud"].iloc[0]
    assert "。" * 300 in row["prompt"]
    assert "…" in parse_reply(row["completion"]).thinking["task"]
    assert "。" * 100 not in row["completion"]


def test_combine_splits_rejects_broken_inputs(split_records):
    train, val, test = (split_records[k] for k in ("train_records", "val_records",
                                                  "test_records"))
    with pytest.raises(ValueError, match="duplicate ids"):
        combine_splits(train, train.head(2), test)
    with pytest.raises(ValueError, match="lacks columns"):
        combine_splits(train.drop(columns=["domain"]), val, test)
    with pytest.raises(ValueError, match="unknown labels"):
        combine_splits(train.assign(label="MAYBE"), val, test)
    with pytest.raises(ValueError, match="label_id"):
        combine_splits(train.assign(label_id=0), val, test)
    with pytest.raises(ValueError, match="languages"):
        combine_splits(train.assign(language="fr"), val, test)


def test_render_rejects_unknown_format(split_records):
    records = combine_splits(*split_records.values())
    with pytest.raises(ValueError, match="format"):
        render_thinking_sft_samples(records, PHRASE_BANK_DATA, {"format": "markdown"})


def test_summary_of_an_empty_dataset():
    empty = pd.DataFrame(columns=list(OUTPUT_COLUMNS))
    stats = summarise_thinking_sft(empty)
    assert stats["n_samples"] == 0 and stats["by_split"] == {}
    assert stats["char_length"]["text"]["max"] == 0


def test_parameters_file_matches_the_nodes():
    params = yaml.safe_load(
        (PROJECT_ROOT / "conf/base/parameters_thinking_sft.yml").read_text(encoding="utf-8"))
    section = params["thinking_sft"]
    assert section["format"] in ("quadruple", "sections")
    assert {"format", "seed", "max_quoted_chars", "validate_round_trip"} <= set(section)
