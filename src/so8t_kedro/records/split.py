"""The train / val / test split of request records: group-aware, stratified, seeded.

The unit of the split is a near-duplicate group (:mod:`.near_duplicates`; a record
outside any group is a group of one), so a typo or politeness variant never sits in train
while its twin is in test. Groups are split with scikit-learn's ``train_test_split``,
stratified on each group's most common label.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pandas as pd
from sklearn.model_selection import train_test_split

from so8t_kedro.labels import LABEL_TO_ID
from so8t_kedro.records.schema import NEAR_DUPLICATE_GROUP_COLUMNS, RECORD_COLUMNS, SPLITS
from so8t_kedro.records.tables import ensure_columns, with_contract_dtypes

logger = logging.getLogger(__name__)


def _group_strata(records: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """One row per group (``group``, ``label``): the label to stratify the group on is its
    most common one, ties going to the earlier label in ``LABELS``."""
    group_of = dict(zip(groups["id"].tolist(), groups["group"].tolist(), strict=True))
    labels_of: dict[str, Counter] = {}
    for record_id, label in zip(records["id"].tolist(), records["label"].tolist(), strict=True):
        labels_of.setdefault(group_of.get(record_id, record_id), Counter())[label] += 1
    strata = [
        min(counts, key=lambda label: (-counts[label], LABEL_TO_ID[label]))
        for counts in labels_of.values()
    ]
    return pd.DataFrame({"group": list(labels_of), "label": strata})


def split_records(
    records: pd.DataFrame,
    near_duplicate_groups: pd.DataFrame,
    *,
    val_fraction: float,
    test_fraction: float,
    random_state: int,
    allow_unstratified_fallback: bool,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Split ``records`` into train / val / test, keeping near-duplicate groups together.

    The test groups are taken first, then the validation groups from the rest, both with
    ``random_state``; train gets what is left (``1 - val_fraction - test_fraction``).
    Fractions are of groups; with the small groups near duplicates form, the record
    counts per split and label follow them closely (the summary reports the record
    sizes). When a class has too few groups to be stratified (scikit-learn needs at least
    2 per class and a held-out split at least as large as the number of classes), this
    raises ``ValueError`` naming the class counts, unless ``allow_unstratified_fallback``:
    then the split is plain random (still seeded) and the summary says
    ``"stratified": false``.

    Args:
        records: unique records (:data:`RECORD_COLUMNS`).
        near_duplicate_groups: the records of every group of 2+
            (:data:`NEAR_DUPLICATE_GROUP_COLUMNS`; may be an empty table without columns).
        val_fraction: share of groups for validation, in [0, 1].
        test_fraction: share of groups for test, in [0, 1].
        random_state: seed of both draws.
        allow_unstratified_fallback: fall back to a random split instead of raising.

    Returns:
        train, val, test (each :data:`RECORD_COLUMNS` with the contract dtypes, records
        in the shuffled order of their groups) and a summary of the split.
    """
    records = records[RECORD_COLUMNS].reset_index(drop=True)
    near_duplicate_groups = ensure_columns(near_duplicate_groups, NEAR_DUPLICATE_GROUP_COLUMNS)
    units = _group_strata(records, near_duplicate_groups)
    summary: dict[str, Any] = {
        "random_state": random_state,
        "stratified": True,
        "group_aware": True,
        "groups": len(units),
        "fractions": {
            "train": 1.0 - val_fraction - test_fraction,
            "val": val_fraction,
            "test": test_fraction,
        },
    }

    def holdout(frame: pd.DataFrame, fraction: float, stratify: bool):
        if fraction == 0.0 or frame.empty:
            return frame, frame.iloc[0:0]
        return train_test_split(
            frame,
            test_size=fraction,
            random_state=random_state,
            shuffle=True,
            stratify=frame["label"] if stratify else None,
        )

    def run(stratify: bool):
        rest, test = holdout(units, test_fraction, stratify)
        val_of_rest = val_fraction / (1.0 - test_fraction) if test_fraction < 1.0 else 0.0
        train, val = holdout(rest, val_of_rest, stratify)
        return train, val, test

    if units.empty:
        logger.warning("No usable records: the train/val/test splits are empty")
        unit_splits = (units, units, units)
        summary["stratified"] = False
    else:
        try:
            unit_splits = run(stratify=True)
        except ValueError as exc:
            counts = {label: int(n) for label, n in units["label"].value_counts().items()}
            message = (
                f"cannot stratify {len(records)} records ({len(units)} near-duplicate groups) "
                f"with group label counts {counts} into train/val/test = "
                f"{summary['fractions']}: {exc}"
            )
            if not allow_unstratified_fallback:
                raise ValueError(
                    f"{message}. Add records for the small classes or set "
                    "params:data_processing.split.allow_unstratified_fallback: true"
                ) from exc
            logger.warning("%s; falling back to an unstratified split", message)
            summary["stratified"] = False
            summary["fallback_reason"] = str(exc)
            try:
                unit_splits = run(stratify=False)
            except ValueError as exc2:
                raise ValueError(f"cannot split {len(records)} records at all: {exc2}") from exc2
    # Each record goes where its group went, in the group's shuffled position.
    position = {
        group: (k, rank)
        for k, frame in enumerate(unit_splits)
        for rank, group in enumerate(frame["group"].tolist())
    }
    group_of = dict(
        zip(
            near_duplicate_groups["id"].tolist(),
            near_duplicate_groups["group"].tolist(),
            strict=True,
        )
    )
    placed = [position[group_of.get(i, i)] for i in records["id"].tolist()]
    order = sorted(range(len(records)), key=lambda row: placed[row])
    splits = [
        with_contract_dtypes(records.iloc[[row for row in order if placed[row][0] == k]])
        for k in range(len(SPLITS))
    ]
    summary["sizes"] = {name: len(s) for name, s in zip(SPLITS, splits, strict=True)}
    summary["group_sizes"] = {
        name: len(frame) for name, frame in zip(SPLITS, unit_splits, strict=True)
    }
    return splits[0], splits[1], splits[2], summary
