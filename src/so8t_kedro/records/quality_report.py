"""The data-quality report of a processing run and its label-distribution chart.

Accounting (asserted by :func:`data_quality_report`)::

    kept + quarantined + duplicates + blank_lines == lines_read

Every physical line of every ingested file ends in exactly one of those four buckets
(blank, whitespace-only lines are *skipped but accounted*, see :mod:`.jsonl`); a sum that
does not add up raises :class:`~.schema.RecordAccountingError`, so a report exists only
if it holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from so8t_kedro.labels import LABELS
from so8t_kedro.records.schema import (
    DUPLICATE_COLUMNS,
    NEAR_DUPLICATE_GROUP_COLUMNS,
    QUARANTINE_COLUMNS,
    RECORD_COLUMNS,
    SPLITS,
    RecordAccountingError,
)
from so8t_kedro.records.tables import ensure_columns


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


def kept_records_summary(
    train_records: pd.DataFrame,
    val_records: pd.DataFrame,
    test_records: pd.DataFrame,
    near_duplicate_groups: pd.DataFrame,
    near_duplicate_summary: Mapping[str, Any],
) -> dict[str, Any]:
    """What a split kept, counted from the splits themselves, for :func:`data_quality_report`.

    Returns the kept records per source file (``kept_by_file``, the report's accounting
    checks it), their label / language / domain distributions overall and per split
    (``distribution``) and ``near_duplicates``: the grouping's summary with the number of
    groups found in more than one split.
    """
    # An empty table saved as JSONL comes back without columns.
    splits = {
        name: ensure_columns(frame, RECORD_COLUMNS)
        for name, frame in zip(SPLITS, (train_records, val_records, test_records), strict=True)
    }
    kept_all = pd.concat(list(splits.values()), ignore_index=True)
    near_duplicate_groups = ensure_columns(near_duplicate_groups, NEAR_DUPLICATE_GROUP_COLUMNS)
    split_of = {
        record_id: name for name, frame in splits.items() for record_id in frame["id"].tolist()
    }
    splits_per_group = (
        near_duplicate_groups.assign(split=near_duplicate_groups["id"].map(split_of))
        .groupby("group")["split"]
        .nunique()
    )
    return {
        "kept_by_file": dict(_count_by_file(kept_all["source"])),
        "distribution": {
            "overall": _distribution(kept_all),
            **{name: _distribution(frame) for name, frame in splits.items()},
        },
        "near_duplicates": {
            **near_duplicate_summary,
            "groups_in_more_than_one_split": int((splits_per_group > 1).sum()),
        },
    }


def data_quality_report(
    ingest_summary: dict[str, Any],
    pii_counts: dict[str, Any],
    quarantined_records: pd.DataFrame,
    duplicate_records: pd.DataFrame,
    split_summary: dict[str, Any],
) -> dict[str, Any]:
    """Assemble the data-quality report and check that no record was lost.

    The report has lines read per file, kept / quarantined (by reason) / duplicate
    counts overall and per file, PII replacements per entity type and per file, label /
    language / domain distributions overall and per split, the near-duplicate groups (with
    the number of groups found in more than one split), the ignored files and the
    accounting check.

    Args:
        ingest_summary: lines read and blank lines per file, the ignored files.
        pii_counts: PII replacements per entity type and per file.
        quarantined_records: every quarantined line, with its file and reason.
        duplicate_records: every duplicate dropped, with its source.
        split_summary: the split node's summary: ``split`` (how it split),
            and :func:`kept_records_summary` of what it kept.

    Raises:
        RecordAccountingError: if ``kept + quarantined + duplicates + blank_lines``
            differs from ``lines_read`` for any file or overall.
    """
    # An empty table saved as JSONL comes back without columns.
    quarantined_records = ensure_columns(quarantined_records, QUARANTINE_COLUMNS)
    duplicate_records = ensure_columns(duplicate_records, DUPLICATE_COLUMNS)
    kept_by_file = Counter(split_summary["kept_by_file"])
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
        kept=split_summary["distribution"]["overall"]["records"],
        quarantined=len(quarantined_records),
        duplicates=len(duplicate_records),
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
        "near_duplicates": split_summary["near_duplicates"],
        "pii_replacements": {
            "by_type": dict(pii_counts.get("by_type", {})),
            "by_file": dict(pii_counts.get("by_file", {})),
        },
        "distribution": split_summary["distribution"],
        "split": split_summary["split"],
    }


def label_distribution_figure(
    train_records: pd.DataFrame, val_records: pd.DataFrame, test_records: pd.DataFrame
) -> Figure:
    """Grouped bar chart of the label counts per split, annotated with the shares."""
    frames = [ensure_columns(f, RECORD_COLUMNS) for f in (train_records, val_records, test_records)]
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
