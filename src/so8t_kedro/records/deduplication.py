"""Deduplicating record tables: exact and near-exact duplicates dropped (label conflicts
quarantined), near-duplicate groups listed for the split.

The keys and the grouping of texts are :mod:`.near_duplicates`; this module applies them
to the record tables of :mod:`.schema`.

Duplicates: records whose :func:`~.near_duplicates.dedup_key` (NFKC + casefold,
whitespace and punctuation removed) matches an earlier record are duplicates of the first
occurrence. If the records sharing a key disagree on the label, *all* of them are
quarantined with reason ``label_conflict``: the data cannot tell which label is right, and
a safety classifier must not learn a coin flip.

Near duplicates (character n-gram Jaccard similarity at least a threshold) are not
dropped: a typo or politeness variant is a valid training example, it just must not sit
in train while its twin is in test (:mod:`.split`).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pandas as pd

from so8t_kedro.records.near_duplicates import dedup_key, near_duplicate_groups
from so8t_kedro.records.schema import (
    DUPLICATE_COLUMNS,
    NEAR_DUPLICATE_GROUP_COLUMNS,
    QUARANTINE_COLUMNS,
    RECORD_COLUMNS,
)

logger = logging.getLogger(__name__)


def deduplicate_records(
    clean_records: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Drop exact and near-exact duplicates; quarantine label conflicts.

    Records with the same :func:`~.near_duplicates.dedup_key` form a group. If the group
    agrees on the label, its first record (input order) is kept and the others are
    duplicates that point at it (``match`` is ``"exact"`` for identical cleaned text,
    else ``"near"``). If it disagrees, every record of the group is quarantined as
    ``label_conflict``. A kept record whose id was already taken by an earlier kept
    record gets the id ``"<id>@<source>"`` so that ids stay unique.

    Returns:
        Unique records (:data:`RECORD_COLUMNS`), duplicates (:data:`DUPLICATE_COLUMNS`)
        and the conflict quarantine (:data:`QUARANTINE_COLUMNS`).
    """
    texts = clean_records["text"].tolist()
    labels = clean_records["label"].tolist()
    groups: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        groups.setdefault(dedup_key(text), []).append(i)

    ids = clean_records["id"].tolist()
    sources = clean_records["source"].tolist()
    kept_rows: list[int] = []  # ascending: groups are in order of their first record
    dup_rows: list[int] = []
    dup_of: list[int] = []
    conflicts: list[tuple[int, str]] = []
    for members in groups.values():
        first = members[0]
        group_labels = {labels[i] for i in members}
        if len(group_labels) > 1:
            summary = ", ".join(f"{labels[i]}@{sources[i]}" for i in members[:6])
            more = f" and {len(members) - 6} more" if len(members) > 6 else ""
            for i in members:
                conflicts.append((i, f"same normalised text labelled {summary}{more}"))
            continue
        kept_rows.append(first)
        for i in members[1:]:
            dup_rows.append(i)
            dup_of.append(first)

    seen: set[str] = set()
    for i in kept_rows:  # kept ids stay unique
        if ids[i] in seen:
            ids[i] = f"{ids[i]}@{sources[i]}"
        seen.add(ids[i])
    unique = clean_records.iloc[kept_rows][RECORD_COLUMNS].reset_index(drop=True)
    unique["id"] = [ids[i] for i in kept_rows]

    dups = clean_records.iloc[dup_rows][RECORD_COLUMNS].reset_index(drop=True)
    dups["duplicate_of_id"] = [ids[j] for j in dup_of]
    dups["duplicate_of_source"] = [sources[j] for j in dup_of]
    dups["match"] = [
        "exact" if texts[i] == texts[j] else "near" for i, j in zip(dup_rows, dup_of, strict=True)
    ]

    conflicts.sort()  # input order
    rows = [i for i, _ in conflicts]
    conflict = clean_records.iloc[rows][["file", "line", "source", "id", "raw"]].reset_index(
        drop=True
    )
    conflict["field"] = "label"
    conflict["reason"] = "label_conflict"
    conflict["detail"] = [f"{sources[i]}: {detail}" for i, detail in conflicts]
    logger.info(
        "Deduplicated %d records: %d kept, %d duplicates, %d label conflicts",
        len(texts),
        len(unique),
        len(dups),
        len(conflict),
    )
    return unique, dups[DUPLICATE_COLUMNS], conflict[QUARANTINE_COLUMNS]


def near_duplicate_table(
    unique_records: pd.DataFrame,
    *,
    ngram: int,
    threshold: float,
    num_perm: int,
    seed: int,
    max_indexed_per_group: int,
    report_examples: int,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Group near-duplicate requests so that the split keeps each group together.

    Texts whose character ``ngram`` Jaccard similarity is at least ``threshold`` are
    grouped (:func:`~so8t_kedro.records.near_duplicates.near_duplicate_groups`: MinHash
    LSH candidates with ``num_perm`` permutations and ``seed``, exact Jaccard check, at
    most ``max_indexed_per_group`` records of a group indexed). Nothing is dropped.

    Returns:
        The records of every group of 2+ (:data:`NEAR_DUPLICATE_GROUP_COLUMNS`, by group
        then input order; ``group`` is the id of the group's first record) and a summary:
        the settings, the number of groups, records in them, group sizes, and the
        ``report_examples`` largest groups' labels and texts as examples.
    """
    groups = near_duplicate_groups(
        unique_records["text"].tolist(),
        ngram=ngram,
        threshold=threshold,
        num_perm=num_perm,
        seed=seed,
        max_indexed_per_group=max_indexed_per_group,
    )
    sizes = Counter(groups)
    rows = sorted((g, i) for i, g in enumerate(groups) if sizes[g] > 1)
    members = unique_records.iloc[[i for _, i in rows]].reset_index(drop=True)
    ids = unique_records["id"].tolist()
    table = pd.DataFrame(
        {
            "group": [ids[g] for g, _ in rows],
            "id": members["id"].tolist(),
            "label": members["label"].tolist(),
            "source": members["source"].tolist(),
            "text": members["text"].tolist(),
        },
        columns=NEAR_DUPLICATE_GROUP_COLUMNS,
    )
    group_sizes = sorted((sizes[g] for g in set(groups) if sizes[g] > 1), reverse=True)
    largest = sorted(table.groupby("group", sort=False), key=lambda item: -len(item[1]))
    summary = {
        "ngram": ngram,
        "threshold": threshold,
        "groups": len(group_sizes),
        "records_in_groups": len(table),
        "largest_group": group_sizes[0] if group_sizes else 0,
        "group_sizes": {str(k): v for k, v in sorted(Counter(group_sizes).items())},
        "examples": [
            {"group": group, "labels": frame["label"].tolist(), "texts": frame["text"].tolist()}
            for group, frame in largest[:report_examples]
        ],
    }
    logger.info(
        "Near duplicates: %d groups holding %d of %d records (largest %d)",
        summary["groups"],
        summary["records_in_groups"],
        len(unique_records),
        summary["largest_group"],
    )
    return table, summary
