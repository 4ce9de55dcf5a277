"""Nodes of the ``data_processing`` pipeline.

Raw four-class JSONL (any number of ``four_class_*.jsonl`` partitions plus the shipped
seed dataset) becomes clean, PII-scrubbed, deduplicated, stratified train/val/test
record tables, a quarantine table, a duplicate table and a data-quality report.

Nodes, in order: ``ingest_raw_records`` (bytes -> raw records; undecodable lines
quarantined) -> ``clean_records`` (NFKC, whitespace, labels, language, PII) ->
``deduplicate_records`` -> ``group_near_duplicates`` -> ``split_records`` (group-aware:
near-duplicate requests stay in one split); ``collect_quarantined_records`` joins the
three stage quarantines; ``build_data_quality_report`` and ``plot_label_distribution``
report on the result. The record concepts these nodes share with other pipelines live
in :mod:`so8t_kedro.records`: the tables' columns (:mod:`~so8t_kedro.records.schema`),
JSONL reading (:mod:`~so8t_kedro.records.jsonl`), text normalisation
(:mod:`~so8t_kedro.records.text`) and cleaning, which is the ``clean_records`` node itself
(:mod:`~so8t_kedro.records.cleaning`).

Accounting (asserted by :func:`build_data_quality_report`)::

    kept + quarantined + duplicates + blank_lines == lines_read

Every physical line of every ingested file ends in exactly one of those four buckets.
Blank (whitespace-only) lines are *skipped but accounted* (see
:mod:`so8t_kedro.records.jsonl`).

Duplicates: records whose :func:`dedup_key` (NFKC + casefold, whitespace and
punctuation removed) matches an earlier record are duplicates of the first occurrence.
If the records sharing a key disagree on the label, *all* of them are quarantined with
reason ``label_conflict``: the data cannot tell which label is right, and a safety
classifier must not learn a coin flip.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from sklearn.model_selection import train_test_split

from so8t_kedro.labels import LABEL_TO_ID, LABELS
from so8t_kedro.records.cleaning import configured_scrubber
from so8t_kedro.records.jsonl import matching_partitions, read_jsonl_files
from so8t_kedro.records.near_duplicates import dedup_key, near_duplicate_groups
from so8t_kedro.records.schema import (
    DUPLICATE_COLUMNS,
    NEAR_DUPLICATE_GROUP_COLUMNS,
    QUARANTINE_COLUMNS,
    RECORD_COLUMNS,
    SPLITS,
    RecordAccountingError,
)
from so8t_kedro.records.text import detect_language, normalise_text

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------ ingest


def ingest_raw_records(
    four_class_partitions: Mapping[str, Callable[[], bytes]],
    seed_dataset: bytes,
    params: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Decode the seed dataset and every ``four_class_*.jsonl`` partition line by line.

    Partitions whose id does not match ``params["partition_pattern"]`` are not read and
    are listed as ignored. Both the flat schema (``text``, ``label``) and the nested one
    (``quadruple_classification.four_class_label`` with ``text`` / ``original_text`` /
    ``instruction`` + ``input``) are accepted; the seed dataset is read first, then the
    partitions in sorted order. Lines that cannot be used are quarantined with a reason.

    Args:
        four_class_partitions: partition id -> loader returning the file's bytes.
        seed_dataset: the seed JSONL file's bytes.
        params: ``params:data_processing.ingest``.

    Returns:
        Raw records (text and label not yet cleaned), their quarantine, and the ingest
        summary (per-file line counts, ignored files).
    """
    pattern = params["partition_pattern"]
    seed_name = params["seed_file_name"]
    snippet = params["raw_snippet_chars"]

    if seed_name in four_class_partitions:
        raise ValueError(
            f"params:data_processing.ingest.seed_file_name {seed_name!r} is also the name of a "
            "four_class partition; their lines could not be told apart"
        )
    partitions, ignored = matching_partitions(four_class_partitions, pattern)
    files = [(seed_name, lambda: seed_dataset), *partitions]
    raw, bad, per_file = read_jsonl_files(files, snippet)
    logger.info(
        "Ingested %d files (%d records, %d quarantined, %d ignored files)",
        len(files),
        len(raw),
        len(bad),
        len(ignored),
    )
    return raw, bad, {"files": per_file, "ignored_files": ignored}


# ---------------------------------------------------------------------- deduplicate


def deduplicate_records(
    clean_records: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Drop exact and near-exact duplicates; quarantine label conflicts.

    Records with the same :func:`dedup_key` form a group. If the group agrees on the
    label, its first record (input order) is kept and the others are duplicates that
    point at it (``match`` is ``"exact"`` for identical cleaned text, else ``"near"``).
    If it disagrees, every record of the group is quarantined as ``label_conflict``.
    A kept record whose id was already taken by an earlier kept record gets the id
    ``"<id>@<source>"`` so that ids stay unique.

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


def group_near_duplicates(
    unique_records: pd.DataFrame, params: Mapping[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Group near-duplicate requests so that the split keeps each group together.

    Texts whose character ``ngram`` Jaccard similarity is at least ``threshold`` are
    grouped (:func:`~so8t_kedro.records.near_duplicates.near_duplicate_groups`: MinHash
    LSH candidates, exact Jaccard check). Unlike :func:`deduplicate_records` nothing is
    dropped: a typo or politeness variant is a valid training example, it just must
    not sit in train while its twin is in test.

    Args:
        unique_records: output of :func:`deduplicate_records`.
        params: ``params:data_processing.near_duplicates``.

    Returns:
        The records of every group of 2+ (:data:`NEAR_DUPLICATE_GROUP_COLUMNS`, by group
        then input order) and a summary: the settings, the number of groups, records in
        them, group sizes, and the largest groups' texts as examples.
    """
    ngram = params["ngram"]
    threshold = float(params["threshold"])
    num_perm = params["num_perm"]
    seed = params["seed"]
    max_indexed = params["max_indexed_per_group"]
    n_examples = params["report_examples"]
    if ngram < 1:
        raise ValueError(f"params:data_processing.near_duplicates.ngram must be >= 1, got {ngram}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(
            f"params:data_processing.near_duplicates.threshold must be in (0, 1], got {threshold}"
        )
    groups = near_duplicate_groups(
        unique_records["text"].tolist(),
        ngram=ngram,
        threshold=threshold,
        num_perm=num_perm,
        seed=seed,
        max_indexed_per_group=max_indexed,
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
            for group, frame in largest[:n_examples]
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


def collect_quarantined_records(
    ingest_quarantine: pd.DataFrame,
    clean_quarantine: pd.DataFrame,
    conflict_quarantine: pd.DataFrame,
    params: Mapping[str, Any],
) -> pd.DataFrame:
    """Join the stage quarantines into one table sorted by file and line.

    When ``scrub_pii`` is on, the ``raw`` snippets are normalised and scrubbed too, so
    that the quarantine file does not keep what the clean records lose (a snippet the
    engine fails on is emptied).
    """
    frames = [q for q in (ingest_quarantine, clean_quarantine, conflict_quarantine) if len(q)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in QUARANTINE_COLUMNS})
    quarantine = (
        pd.concat(frames, ignore_index=True)[QUARANTINE_COLUMNS]
        .sort_values(["file", "line"], kind="stable")
        .reset_index(drop=True)
    )
    scrubber = configured_scrubber(params)
    if scrubber is not None:
        raws = [normalise_text(raw or "") for raw in quarantine["raw"].tolist()]
        results = scrubber.scrub(raws, [detect_language(raw) for raw in raws])
        # A snippet the engine fails on is dropped, never kept unscrubbed.
        quarantine["raw"] = [r.text if r.error is None else "" for r in results]
    return quarantine


# -------------------------------------------------------------------------- split


def _split_fractions(params: Mapping[str, Any]) -> tuple[float, float, float]:
    fractions = []
    for key in ("train_fraction", "val_fraction", "test_fraction"):
        value = float(params[key])
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"params:data_processing.split.{key} must be in [0, 1], got {value}")
        fractions.append(value)
    train, val, test = fractions
    if abs(train + val + test - 1.0) > 1e-6:
        raise ValueError(
            "params:data_processing.split.{train,val,test}_fraction must sum to 1, "
            f"got {train} + {val} + {test} = {train + val + test}"
        )
    if train == 0.0:
        raise ValueError("params:data_processing.split.train_fraction must be > 0")
    return train, val, test


def _with_contract_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """:data:`RECORD_COLUMNS` with pandas' string dtype for text columns, int64 label ids."""
    dtypes = {c: "str" for c in RECORD_COLUMNS if c != "label_id"} | {"label_id": "int64"}
    return frame[RECORD_COLUMNS].astype(dtypes).reset_index(drop=True)


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
    records: pd.DataFrame, near_duplicate_groups: pd.DataFrame, params: Mapping[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Group-aware, stratified, seeded train / val / test split.

    The unit of the split is a near-duplicate group (a record outside any group is a
    group of one), so the records of a group always land in the same split. Groups are
    split with scikit-learn's ``train_test_split``, stratified on each group's most
    common label: the test groups are taken first, then the validation groups from the
    rest, both with ``random_state``. Fractions are of groups; with the small groups
    near duplicates form, the record counts per split and label follow them closely
    (the summary reports the record sizes). When a class has too few groups to be
    stratified (scikit-learn needs at least 2 per class and a held-out split at least as
    large as the number of classes), this raises ``ValueError`` naming the class counts,
    unless ``allow_unstratified_fallback`` is true: then the split is plain random (still
    seeded) and the summary says ``"stratified": false``.

    Args:
        records: unique records from :func:`deduplicate_records`.
        near_duplicate_groups: from :func:`group_near_duplicates`.
        params: ``params:data_processing.split``.

    Returns:
        train, val, test (each :data:`RECORD_COLUMNS`, records in the shuffled order of
        their groups) and a summary of the split.
    """
    _, val_frac, test_frac = _split_fractions(params)
    seed = params["random_state"]
    fallback = params["allow_unstratified_fallback"]
    records = records[RECORD_COLUMNS].reset_index(drop=True)
    near_duplicate_groups = _ensure_columns(near_duplicate_groups, NEAR_DUPLICATE_GROUP_COLUMNS)
    units = _group_strata(records, near_duplicate_groups)
    summary: dict[str, Any] = {
        "random_state": seed,
        "stratified": True,
        "group_aware": True,
        "groups": len(units),
        "fractions": {"train": 1.0 - val_frac - test_frac, "val": val_frac, "test": test_frac},
    }

    def holdout(frame: pd.DataFrame, fraction: float, stratify: bool):
        if fraction == 0.0 or frame.empty:
            return frame, frame.iloc[0:0]
        return train_test_split(
            frame,
            test_size=fraction,
            random_state=seed,
            shuffle=True,
            stratify=frame["label"] if stratify else None,
        )

    def run(stratify: bool):
        rest, test = holdout(units, test_frac, stratify)
        val_of_rest = val_frac / (1.0 - test_frac) if test_frac < 1.0 else 0.0
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
            if not fallback:
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
        zip(near_duplicate_groups["id"].tolist(), near_duplicate_groups["group"].tolist(),
            strict=True)
    )
    placed = [position[group_of.get(i, i)] for i in records["id"].tolist()]
    order = sorted(range(len(records)), key=lambda row: placed[row])
    splits = [
        _with_contract_dtypes(records.iloc[[row for row in order if placed[row][0] == k]])
        for k in range(len(SPLITS))
    ]
    summary["sizes"] = {name: len(s) for name, s in zip(SPLITS, splits, strict=True)}
    summary["group_sizes"] = {
        name: len(frame) for name, frame in zip(SPLITS, unit_splits, strict=True)
    }
    return splits[0], splits[1], splits[2], summary


# ------------------------------------------------------------------------ reporting


def _ensure_columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``frame`` with any missing ``columns`` added (empty JSONL loads with no columns)."""
    missing = [c for c in columns if c not in frame.columns]
    return frame.assign(**{c: pd.Series(dtype=object) for c in missing}) if missing else frame


def _distribution(frame: pd.DataFrame) -> dict[str, Any]:
    label_counts = frame["label"].value_counts()
    n = len(frame)
    labels = {label: int(label_counts.get(label, 0)) for label in LABELS}
    return {
        "records": n,
        "label": labels,
        "label_share": {k: (round(v / n, 4) if n else 0.0) for k, v in labels.items()},
        "language": {str(k): int(v) for k, v in frame["language"].value_counts().items()},
        "domain": {str(k): int(v) for k, v in frame["domain"].value_counts().items()},
    }


def _count_by_file(sources: pd.Series) -> Counter:
    return Counter(source.rpartition(":")[0] for source in sources.tolist())


def build_data_quality_report(
    ingest_summary: dict[str, Any],
    pii_counts: dict[str, Any],
    quarantined_records: pd.DataFrame,
    duplicate_records: pd.DataFrame,
    train_records: pd.DataFrame,
    val_records: pd.DataFrame,
    test_records: pd.DataFrame,
    split_summary: dict[str, Any],
    near_duplicate_groups: pd.DataFrame,
    near_duplicate_summary: dict[str, Any],
) -> dict[str, Any]:
    """Assemble the data-quality report and check that no record was lost.

    The report has lines read per file, kept / quarantined (by reason) / duplicate
    counts overall and per file, PII replacements per entity type and per file, label / language / domain
    distributions overall and per split, the near-duplicate groups (with the number of
    groups found in more than one split, counted from the splits themselves), the
    ignored files and the accounting check.

    Raises:
        RecordAccountingError: if ``kept + quarantined + duplicates + blank_lines``
            differs from ``lines_read`` for any file or overall.
    """
    # An empty table saved as JSONL comes back without columns.
    quarantined_records = _ensure_columns(quarantined_records, QUARANTINE_COLUMNS)
    duplicate_records = _ensure_columns(duplicate_records, DUPLICATE_COLUMNS)
    splits = {
        name: _ensure_columns(frame, RECORD_COLUMNS)
        for name, frame in zip(SPLITS, (train_records, val_records, test_records), strict=True)
    }
    kept_all = pd.concat(list(splits.values()), ignore_index=True)
    kept_by_file = _count_by_file(kept_all["source"])
    dup_by_file = _count_by_file(duplicate_records["source"])
    q_by_file = Counter(quarantined_records["file"].tolist())

    files: dict[str, Any] = {}
    errors: list[str] = []
    for name, info in ingest_summary["files"].items():
        q_reasons = quarantined_records.loc[quarantined_records["file"] == name, "reason"]
        entry = {
            **info,
            "kept": kept_by_file.pop(name, 0),
            "quarantined": q_by_file.pop(name, 0),
            "duplicates": dup_by_file.pop(name, 0),
            "quarantined_by_reason": {str(k): int(v) for k, v in q_reasons.value_counts().items()},
        }
        total = entry["kept"] + entry["quarantined"] + entry["duplicates"] + entry["blank_lines"]
        if total != entry["lines_read"]:
            errors.append(
                f"{name}: kept {entry['kept']} + quarantined {entry['quarantined']} + duplicates "
                f"{entry['duplicates']} + blank {entry['blank_lines']} = {total} != lines read "
                f"{entry['lines_read']}"
            )
        files[name] = entry
    for label, leftover in (
        ("kept", kept_by_file),
        ("quarantined", q_by_file),
        ("duplicate", dup_by_file),
    ):
        if leftover:
            errors.append(f"{label} records from files that were never read: {dict(leftover)}")

    totals = {
        key: sum(int(f[key]) for f in files.values()) for key in ("lines_read", "blank_lines")
    }
    totals.update(
        kept=len(kept_all), quarantined=len(quarantined_records), duplicates=len(duplicate_records)
    )
    accounted = (
        totals["kept"] + totals["quarantined"] + totals["duplicates"] + totals["blank_lines"]
    )
    # A report exists only if this holds: it records the check, it cannot say it failed.
    invariant = {
        "formula": "kept + quarantined + duplicates + blank_lines == lines_read",
        **totals,
        "accounted": accounted,
    }
    if errors or accounted != totals["lines_read"]:
        detail = "; ".join(errors) or (
            f"kept {totals['kept']} + quarantined {totals['quarantined']} + duplicates "
            f"{totals['duplicates']} + blank {totals['blank_lines']} = {accounted} != lines read "
            f"{totals['lines_read']}"
        )
        raise RecordAccountingError(f"data_processing lost or invented records: {detail}")

    match = duplicate_records["match"].value_counts() if len(duplicate_records) else {}
    near_duplicate_groups = _ensure_columns(near_duplicate_groups, NEAR_DUPLICATE_GROUP_COLUMNS)
    split_of = {
        record_id: name for name, frame in splits.items() for record_id in frame["id"].tolist()
    }
    splits_per_group = (
        near_duplicate_groups.assign(split=near_duplicate_groups["id"].map(split_of))
        .groupby("group")["split"]
        .nunique()
    )
    return {
        "totals": totals,
        "invariant": invariant,
        "files": files,
        "ignored_files": list(ingest_summary.get("ignored_files", [])),
        "quarantined_by_reason": {
            str(k): int(v) for k, v in quarantined_records["reason"].value_counts().items()
        },
        "duplicates": {
            "total": len(duplicate_records),
            "exact": int(match.get("exact", 0)),
            "near": int(match.get("near", 0)),
        },
        "near_duplicates": {
            **near_duplicate_summary,
            "groups_in_more_than_one_split": int((splits_per_group > 1).sum()),
        },
        "pii_replacements": {
            "by_type": dict(pii_counts.get("by_type", {})),
            "by_file": dict(pii_counts.get("by_file", {})),
        },
        "distribution": {
            "overall": _distribution(kept_all),
            **{name: _distribution(frame) for name, frame in splits.items()},
        },
        "split": split_summary,
    }


def plot_label_distribution(
    train_records: pd.DataFrame, val_records: pd.DataFrame, test_records: pd.DataFrame
) -> Figure:
    """Grouped bar chart of the label counts per split, annotated with the shares."""
    frames = [
        _ensure_columns(f, RECORD_COLUMNS) for f in (train_records, val_records, test_records)
    ]
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(SPLITS)
    for k, (name, frame) in enumerate(zip(SPLITS, frames, strict=True)):
        counts = frame["label"].value_counts()
        values = [int(counts.get(label, 0)) for label in LABELS]
        positions = [i + (k - 1) * width for i in range(len(LABELS))]
        bars = ax.bar(positions, values, width, label=f"{name} (n={len(frame)})")
        total = max(len(frame), 1)
        ax.bar_label(bars, labels=[f"{v / total:.0%}" for v in values], fontsize=8)
    ax.set_xticks(range(len(LABELS)), LABELS)
    ax.set_ylabel("records")
    ax.set_title("Label distribution per split")
    ax.margins(y=0.1)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig
