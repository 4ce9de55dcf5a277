"""records.split: the group-aware, stratified, seeded train / val / test split.

The split of planted near-duplicate groups, and the split parameters as the node reads
them, are tested on the pipeline (tests/pipelines/data_processing/).
"""

from __future__ import annotations

import pandas as pd
import pytest

from so8t_kedro.labels import LABELS
from so8t_kedro.records.schema import NEAR_DUPLICATE_GROUP_COLUMNS, RECORD_COLUMNS
from so8t_kedro.records.split import split_records
from tests.helpers.records import COUNTS, NO_GROUPS, shipped_split_settings, unique_records

SHIPPED = shipped_split_settings()


def test_split_is_stratified():
    records = unique_records(COUNTS)
    train, val, test, summary = split_records(records, NO_GROUPS, **SHIPPED)
    assert (len(train), len(val), len(test)) == (800, 100, 100)
    for frame, fraction in ((train, 0.8), (val, 0.1), (test, 0.1)):
        per_class = frame["label"].value_counts()
        for label, n in COUNTS.items():
            assert abs(per_class[label] - n * fraction) <= 1, (label, fraction, per_class[label])
    assert summary["stratified"] is True
    assert summary["sizes"] == {"train": 800, "val": 100, "test": 100}
    # a partition of the input: nothing lost, nothing shared
    ids = pd.concat([train, val, test])["id"]
    assert ids.is_unique and set(ids) == set(records["id"])
    for frame in (train, val, test):
        assert list(frame.columns) == RECORD_COLUMNS
        assert frame["label_id"].dtype == "int64"
        assert (frame["label"].map(LABELS.index) == frame["label_id"]).all()


def test_groups_stay_together_and_are_stratified_on_their_most_common_label():
    records = unique_records({"ALLOW": 40, "ESCALATION": 40, "DENY": 40, "REFUSE": 40})
    # Ten groups of four: three ALLOW and one DENY each, so each group is an ALLOW unit.
    members = [
        (f"ALLOW-{g}", [f"ALLOW-{g}", f"ALLOW-{g + 10}", f"ALLOW-{g + 20}", f"DENY-{g}"])
        for g in range(10)
    ]
    groups = pd.DataFrame(
        [
            {"group": group, "id": i, "label": i.split("-")[0], "source": "", "text": ""}
            for group, ids in members
            for i in ids
        ],
        columns=NEAR_DUPLICATE_GROUP_COLUMNS,
    )
    train, val, test, summary = split_records(records, groups, **SHIPPED)
    split_of = {
        i: name for name, f in (("train", train), ("val", val), ("test", test)) for i in f["id"]
    }
    assert len(split_of) == len(records)
    for _, ids in members:
        assert len({split_of[i] for i in ids}) == 1
    assert summary["groups"] == len(records) - 10 * 3
    assert sum(summary["group_sizes"].values()) == summary["groups"]


def test_split_is_deterministic_per_seed():
    records = unique_records(COUNTS)
    first = split_records(records, NO_GROUPS, **SHIPPED)
    again = split_records(records.copy(), NO_GROUPS, **SHIPPED)
    for a, b in zip(first[:3], again[:3], strict=True):
        pd.testing.assert_frame_equal(a, b)
    other = split_records(records, NO_GROUPS, **{**SHIPPED, "random_state": 7})
    assert set(other[2]["id"]) != set(first[2]["id"])
    assert set(other[1]["id"]) != set(first[1]["id"])


def test_split_with_zero_validation_fraction():
    train, val, test, summary = split_records(
        unique_records(COUNTS), NO_GROUPS, **{**SHIPPED, "val_fraction": 0.0}
    )
    assert (len(train), len(val), len(test)) == (900, 0, 100)
    assert list(val.columns) == RECORD_COLUMNS
    assert summary["fractions"] == {"train": 0.9, "val": 0.0, "test": 0.1}


def test_too_few_records_to_stratify_is_a_clear_error():
    records = unique_records({"ALLOW": 20, "ESCALATION": 20, "DENY": 20, "REFUSE": 1})
    with pytest.raises(
        ValueError,
        match=r"cannot stratify 61 records.*'REFUSE': 1.*"
        r"allow_unstratified_fallback",
    ):
        split_records(records, NO_GROUPS, **SHIPPED)


def test_unstratified_fallback_when_allowed():
    fallback = {**SHIPPED, "allow_unstratified_fallback": True}
    records = unique_records({"ALLOW": 20, "ESCALATION": 20, "DENY": 20, "REFUSE": 1})
    train, val, test, summary = split_records(records, NO_GROUPS, **fallback)
    assert summary["stratified"] is False and "least populated class" in summary["fallback_reason"]
    assert len(train) + len(val) + len(test) == 61
    assert (len(val), len(test)) == (6, 7)  # test: ceil(6.1); val: 1/9 of the other 54
    again = split_records(records, NO_GROUPS, **fallback)
    pd.testing.assert_frame_equal(test, again[2])


def test_split_of_nothing_is_empty():
    train, val, test, summary = split_records(unique_records({}), NO_GROUPS, **SHIPPED)
    assert len(train) == len(val) == len(test) == 0
    assert summary["sizes"] == {"train": 0, "val": 0, "test": 0}


def test_groups_table_saved_empty_loads_without_columns():
    train, val, test, _ = split_records(unique_records(COUNTS), pd.DataFrame(), **SHIPPED)
    assert (len(train), len(val), len(test)) == (800, 100, 100)
