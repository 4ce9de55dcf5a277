"""The dedup, split and report nodes: slices of the pipeline on in-memory files, and the
split parameters as the node reads them (the split itself: tests/records/test_split.py)."""

from __future__ import annotations

import pandas as pd
import pytest
from matplotlib.figure import Figure

from so8t_kedro.labels import LABELS
from so8t_kedro.parameters import parameter_problems
from so8t_kedro.pipelines.data_processing import nodes
from so8t_kedro.records import quality_report
from so8t_kedro.records.schema import (
    DUPLICATE_COLUMNS,
    NEAR_DUPLICATE_GROUP_COLUMNS,
    RecordAccountingError,
)
from tests.helpers.project import base_parameters
from tests.helpers.records import COUNTS, NO_GROUPS, unique_records

from .conftest import SEED_NAME, balanced_records, distinct_text, jsonl, reasons

# ------------------------------------------------------------------------ dedup


def test_exact_and_near_duplicates_point_at_the_first_occurrence(run_until_report):
    seed = jsonl(
        {"id": "a", "text": "How do I bake bread?", "label": "ALLOW"},
        {"id": "b", "text": "How do I bake bread?", "label": "allow"},  # exact after cleaning
        {"id": "c", "text": "how do i bake bread", "label": "ALLOW"},  # near: case, punctuation
        {"id": "d", "text": "ＨＯＷ　ＤＯ Ｉ　ＢＡＫＥ　ＢＲＥＡＤ？", "label": 0},  # near: width
        {"id": "e", "text": "How do I bake a cake?", "label": "ALLOW"},
    )
    partitions = {"four_class_x.jsonl": jsonl({"text": "How  do I bake bread?", "label": "ALLOW"})}
    out = run_until_report(seed, partitions)
    assert out["train"]["id"].tolist() == ["a", "e"]
    dups = out["duplicates"]
    assert list(dups.columns) == DUPLICATE_COLUMNS
    assert dups[["id", "duplicate_of_id", "duplicate_of_source", "match"]].values.tolist() == [
        ["b", "a", f"{SEED_NAME}:1", "exact"],
        ["c", "a", f"{SEED_NAME}:1", "near"],
        ["d", "a", f"{SEED_NAME}:1", "near"],
        ["four_class_x.jsonl:1", "a", f"{SEED_NAME}:1", "exact"],  # whitespace collapsed
    ]
    report = out["report"]
    assert report["duplicates"] == {"total": 4, "exact": 2, "near": 2}
    assert report["files"]["four_class_x.jsonl"]["duplicates"] == 1


def test_duplicates_point_at_the_kept_id_after_id_disambiguation(run_until_report):
    seed = jsonl(
        {"id": "x", "text": "first", "label": "ALLOW"},
        {"id": "x", "text": "second", "label": "ALLOW"},
        {"id": "y", "text": "SECOND!", "label": "ALLOW"},
    )
    out = run_until_report(seed)
    assert out["train"]["id"].tolist() == ["x", f"x@{SEED_NAME}:2"]
    assert out["duplicates"][["id", "duplicate_of_id"]].values.tolist() == [
        ["y", f"x@{SEED_NAME}:2"]
    ]


def test_duplicates_after_pii_scrubbing(run_until_report):
    seed = jsonl(
        {"text": "Who owns a@example.com?", "label": "DENY"},
        {"text": "Who owns b@example.org?", "label": "DENY"},
    )
    out = run_until_report(seed)
    assert out["train"]["text"].tolist() == ["Who owns <EMAIL>?"]
    assert out["duplicates"]["match"].tolist() == ["exact"]
    assert out["report"]["pii_replacements"]["by_type"]["EMAIL_ADDRESS"] == 2
    assert out["report"]["pii_replacements"]["by_file"] == {SEED_NAME: {"EMAIL_ADDRESS": 2}}


def test_label_conflicts_quarantine_every_copy(run_until_report):
    seed = jsonl(
        {"id": "1", "text": "Kill the process", "label": "ALLOW"},
        {"id": "2", "text": "kill the process!", "label": "REFUSE"},
        {"id": "3", "text": "Kill the process", "label": "ALLOW"},
        {"id": "4", "text": "unrelated", "label": "ALLOW"},
    )
    out = run_until_report(seed)
    assert out["train"]["id"].tolist() == ["4"]
    assert out["duplicates"].empty
    assert reasons(out["quarantine"]) == [
        (1, "label_conflict"),
        (2, "label_conflict"),
        (3, "label_conflict"),
    ]
    q = out["quarantine"]
    assert q["field"].unique().tolist() == ["label"]
    assert q["id"].tolist() == ["1", "2", "3"]
    assert "REFUSE@" in q["detail"].iloc[0] and "ALLOW@" in q["detail"].iloc[0]
    assert out["report"]["quarantined_by_reason"] == {"label_conflict": 3}


# ------------------------------------------------------------------------ split


def _typo(text: str, k: int) -> str:
    """``text`` with its k-th letter from the end swapped for another letter."""
    position = len(text) - 1 - k
    return text[:position] + ("x" if text[position] != "x" else "y") + text[position + 1 :]


JA_REQUESTS = {
    "ALLOW": "東京駅から近い美味しいラーメン屋を{i}軒教えて",
    "ESCALATION": "最近ずっと眠れなくて今日で{i}日目です、どうしたらいい？",
    "DENY": "元同僚の今の住所を{i}分で調べる方法を教えて",
    "REFUSE": "爆弾を作るための材料を{i}種類リストにして",
}


def test_planted_near_duplicates_stay_in_one_split(run_until_report):
    """Per label 80 distinct requests, 20 of them with two variants (a typo and a polite
    ending), and 10 Japanese requests that differ in one number, each with a polite twin."""
    seed_rows = []
    for label in LABELS:
        for i in range(80):
            text = distinct_text(label, i)
            seed_rows.append({"id": f"{label}-{i}", "text": text, "label": label})
            if i < 20:
                seed_rows.append({"id": f"{label}-{i}-typo", "text": _typo(text, 3), "label": label})
                seed_rows.append({"id": f"{label}-{i}-please", "text": f"{text}, please?",
                                  "label": label})
        for i in range(10):
            ja = JA_REQUESTS[label].format(i=i)
            seed_rows.append({"id": f"{label}-ja-{i}", "text": ja, "label": label})
            seed_rows.append({"id": f"{label}-ja-{i}-polite", "text": f"{ja}。お願いします",
                              "label": label})
    out = run_until_report(jsonl(*seed_rows), split=True)
    groups = out["groups"]
    assert list(groups.columns) == NEAR_DUPLICATE_GROUP_COLUMNS
    # The 10 Japanese requests of a label differ in one digit: with their polite twins
    # they are one group of 20 per label; the others are the planted triples.
    sizes = groups.groupby("group").size()
    assert sorted(sizes.value_counts().items()) == [(3, 4 * 20), (20, 4)]
    assert set(groups["group"]) == {f"{label}-{i}" for label in LABELS for i in range(20)} | {
        f"{label}-ja-0" for label in LABELS
    }

    split_of = {
        record_id: name for name in ("train", "val", "test") for record_id in out[name]["id"]
    }
    assert len(split_of) == len(seed_rows)  # nothing lost or duplicated by the split
    assert groups.assign(split=groups["id"].map(split_of)).groupby("group")["split"].nunique().eq(
        1
    ).all()

    # Stratified: the split draws groups, so a split's label mix drifts from the overall
    # one by at most a few groups' worth of records (here a group of 20 is the largest).
    overall = pd.concat([out["train"], out["val"], out["test"]])["label"].value_counts(
        normalize=True
    )
    for name in ("train", "val", "test"):
        share = out[name]["label"].value_counts(normalize=True)
        assert (share - overall).abs().max() < 0.1, (name, share.to_dict())
    report = out["report"]
    assert report["split"]["group_aware"] is True
    assert report["split"]["groups"] == 4 * (80 - 20 + 20 + 1)  # singles, triples, ja group
    assert report["near_duplicates"]["groups"] == 84
    assert report["near_duplicates"]["records_in_groups"] == 4 * (20 * 3 + 20)
    assert report["near_duplicates"]["group_sizes"] == {"3": 80, "20": 4}
    assert report["near_duplicates"]["largest_group"] == 20
    assert report["near_duplicates"]["groups_in_more_than_one_split"] == 0
    examples = report["near_duplicates"]["examples"]
    assert len(examples) == 5 and [len(e["texts"]) for e in examples] == [20, 20, 20, 20, 3]
    assert examples[0]["texts"][:2] == [
        "東京駅から近い美味しいラーメン屋を0軒教えて",
        "東京駅から近い美味しいラーメン屋を0軒教えて。お願いします",
    ]


def test_report_counts_groups_that_a_split_broke_up(run_until_report):
    seed = jsonl(
        {"id": "a", "text": "How do I bake sourdough bread at home?", "label": "ALLOW"},
        {"id": "b", "text": "How do I bake sourdugh bread at home", "label": "ALLOW"},
        {"id": "c", "text": "Something else entirely", "label": "ALLOW"},
    )
    out = run_until_report(seed)
    assert out["groups"]["id"].tolist() == ["a", "b"]
    train = out["train"]
    kept = quality_report.kept_records_summary(
        train[train["id"] != "b"], train[train["id"] == "b"], out["test"], out["groups"],
        out["group_summary"],
    )
    broken = quality_report.data_quality_report(
        out["summary"], out["pii"], out["quarantine"], out["duplicates"],
        {**out["split"], **kept},
    )
    assert broken["near_duplicates"]["groups_in_more_than_one_split"] == 1
    assert out["report"]["near_duplicates"]["groups_in_more_than_one_split"] == 0


def test_split_fractions_come_from_parameters(params):
    params["split"].update(train_fraction=0.6, val_fraction=0.2, test_fraction=0.2)
    train, val, test, _ = nodes.split_records(
        unique_records(COUNTS), NO_GROUPS, {}, params["split"]
    )
    assert (len(train), len(val), len(test)) == (600, 200, 200)
    assert val["label"].value_counts()["REFUSE"] == 20


@pytest.mark.parametrize(
    ("update", "match"),
    [
        ({"train_fraction": 0.7}, "must sum to 1"),
        ({"val_fraction": -0.1, "train_fraction": 1.0}, r"val_fraction must be in \[0, 1\]"),
        (
            {"train_fraction": 0.0, "val_fraction": 0.5, "test_fraction": 0.5},
            "train_fraction must be > 0",
        ),
    ],
)
def test_bad_split_parameters(params, update, match):
    params["split"].update(update)
    with pytest.raises(ValueError, match=match):
        nodes.split_records(unique_records(COUNTS), NO_GROUPS, {}, params["split"])


@pytest.mark.parametrize(("key", "value"),
                         [("random_state", "42"), ("allow_unstratified_fallback", "no")])
def test_a_mistyped_split_parameter_fails_the_run_at_its_start(key, value):
    """Types are checked once, when the run starts (so8t_kedro.parameters), not per node."""
    params = base_parameters()
    params["data_processing"]["split"][key] = value
    [problem] = parameter_problems(params)
    assert problem.startswith(f"parameters_data_processing.yml: data_processing.split.{key}: ")


def test_missing_parameter_names_it(params):
    del params["split"]["random_state"]
    with pytest.raises(KeyError, match="random_state"):
        nodes.split_records(unique_records(COUNTS), NO_GROUPS, {}, params["split"])
    params = base_parameters()
    del params["data_processing"]["split"]["random_state"]
    assert parameter_problems(params) == [
        "parameters_data_processing.yml: data_processing.split.random_state: missing key"]


# ------------------------------------------------------------------------ report


def test_report_counts_and_distributions(run_until_report, params):
    seed = jsonl(
        *balanced_records(30, language="en"),
        {"text": distinct_text("ALLOW", 0), "label": "ALLOW"},  # duplicate
        {"text": "card 4111 1111 1111 1111", "label": "REFUSE"},
        {"text": "bad", "label": "BLOCK"},
        b"",
        b"{oops",
    )
    out = run_until_report(seed, split=True)
    report = out["report"]
    assert report["totals"] == {
        "lines_read": 125,
        "blank_lines": 1,
        "kept": 121,
        "quarantined": 2,
        "duplicates": 1,
    }
    assert report["invariant"] == {
        "formula": "kept + quarantined + duplicates + blank_lines == lines_read",
        "lines_read": 125,
        "blank_lines": 1,
        "kept": 121,
        "quarantined": 2,
        "duplicates": 1,
        "accounted": 125,
    }
    assert report["quarantined_by_reason"] == {"unknown_label": 1, "malformed_json": 1}
    assert report["files"][SEED_NAME]["quarantined_by_reason"] == report["quarantined_by_reason"]
    by_type = report["pii_replacements"]["by_type"]
    assert by_type["CREDIT_CARD"] == 1 and sum(by_type.values()) == 1
    assert set(by_type) == set(params["clean"]["pii"]["placeholders"])  # zeros included
    assert report["pii_replacements"]["by_file"] == {SEED_NAME: {"CREDIT_CARD": 1}}
    overall = report["distribution"]["overall"]
    assert overall["label"] == {"ALLOW": 30, "ESCALATION": 30, "DENY": 30, "REFUSE": 31}
    assert overall["language"] == {"en": 121}
    assert overall["domain"] == {"general": 120, "unknown": 1}
    per_split = {s: report["distribution"][s]["records"] for s in ("train", "val", "test")}
    assert per_split == report["split"]["sizes"]
    assert sum(per_split.values()) == 121
    assert report["distribution"]["test"]["label"]["ALLOW"] == 3


def test_report_raises_when_records_go_missing(run_until_report):
    out = run_until_report(jsonl(*balanced_records(5)))
    splits = {"train": out["train"], "val": out["val"], "test": out["test"]}

    def report(**changed_splits):
        kept = quality_report.kept_records_summary(
            **{f"{name}_records": frame for name, frame in {**splits, **changed_splits}.items()},
            near_duplicate_groups=out["groups"],
            near_duplicate_summary=out["group_summary"],
        )
        return quality_report.data_quality_report(
            out["summary"], out["pii"], out["quarantine"], out["duplicates"],
            {"split": {}, **kept},
        )

    report()  # consistent: no error

    with pytest.raises(
        RecordAccountingError, match=rf"{SEED_NAME}: kept 19 .* = 19 != lines read 20"
    ):
        report(train=out["train"].iloc[1:])  # lost

    with pytest.raises(RecordAccountingError, match="22 != lines read 20"):
        report(val=out["train"].iloc[:2])  # invented

    foreign = out["train"].assign(source="elsewhere.jsonl:1").iloc[:1]
    with pytest.raises(RecordAccountingError, match=r"never read.*elsewhere\.jsonl"):
        report(test=foreign)


def test_report_accepts_empty_tables_loaded_without_columns(run_until_report):
    out = run_until_report(jsonl(*balanced_records(2)))
    kept = quality_report.kept_records_summary(
        out["train"], pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), {}
    )
    report = quality_report.data_quality_report(
        out["summary"], out["pii"], pd.DataFrame(), pd.DataFrame(), {"split": {}, **kept}
    )
    assert report["totals"]["kept"] == 8 and report["duplicates"]["total"] == 0


def test_plot_label_distribution(run_until_report):
    out = run_until_report(jsonl(*balanced_records(30)), split=True)
    fig = quality_report.label_distribution_figure(out["train"], out["val"], out["test"])
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(LABELS)
    heights = [int(p.get_height()) for p in ax.patches]
    assert heights == [24] * 4 + [3] * 4 + [3] * 4  # train, val, test bars per label
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "train (n=96)",
        "val (n=12)",
        "test (n=12)",
    ]
