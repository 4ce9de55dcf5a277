"""Nodes of the ``data_processing`` pipeline: each connects a function of
:mod:`so8t_kedro.records` to the catalog and its parameters.

Raw four-class JSONL (any number of ``four_class_*.jsonl`` partitions plus the shipped
seed dataset) becomes clean, PII-scrubbed, deduplicated, stratified train/val/test
record tables, a quarantine table, a duplicate table and a data-quality report.

Nodes, in order: ``ingest_raw_records`` (bytes -> raw records; undecodable lines
quarantined, :mod:`~so8t_kedro.records.jsonl`) -> ``clean_records`` (NFKC, whitespace,
labels, language, PII; the node is :func:`so8t_kedro.records.cleaning.clean_records`
itself) -> ``deduplicate_records`` (the node is
:func:`so8t_kedro.records.deduplication.deduplicate_records`) and ``group_near_duplicates``
-> ``split_records`` (group-aware: near-duplicate requests stay in one split,
:mod:`~so8t_kedro.records.split`); ``collect_quarantined_records`` joins the three stage
quarantines (:mod:`~so8t_kedro.records.quarantine`); ``build_data_quality_report`` and
``plot_label_distribution`` report on the result (the nodes are
:func:`so8t_kedro.records.quality_report.data_quality_report`, which states the
accounting rule every line read obeys, and its ``label_distribution_figure``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from so8t_kedro.records import deduplication, quality_report, quarantine, split
from so8t_kedro.records.cleaning import configured_scrubber
from so8t_kedro.records.jsonl import matching_partitions, read_jsonl_files

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


def group_near_duplicates(
    unique_records: pd.DataFrame, params: Mapping[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Group near-duplicate requests so that the split keeps each group together
    (:func:`so8t_kedro.records.deduplication.near_duplicate_table`).

    Args:
        unique_records: ``unique_records``.
        params: ``params:data_processing.near_duplicates``.

    Returns:
        ``near_duplicate_groups`` (the records of every group of 2+) and
        ``near_duplicate_summary``.
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
    return deduplication.near_duplicate_table(
        unique_records,
        ngram=ngram,
        threshold=threshold,
        num_perm=num_perm,
        seed=seed,
        max_indexed_per_group=max_indexed,
        report_examples=n_examples,
    )


def collect_quarantined_records(
    ingest_quarantine: pd.DataFrame,
    clean_quarantine: pd.DataFrame,
    conflict_quarantine: pd.DataFrame,
    params: Mapping[str, Any],
) -> pd.DataFrame:
    """Join the stage quarantines into one table sorted by file and line
    (:func:`so8t_kedro.records.quarantine.join_quarantines`).

    When ``scrub_pii`` is on, the ``raw`` snippets are scrubbed with the same scrubber as
    the records, so that the quarantine file does not keep what the clean records lose.

    Args:
        ingest_quarantine: lines :func:`ingest_raw_records` could not use.
        clean_quarantine: records ``clean_records`` could not use.
        conflict_quarantine: label conflicts from ``deduplicate_records``.
        params: ``params:data_processing.clean``.

    Returns:
        ``quarantined_records``.
    """
    return quarantine.join_quarantines(
        [ingest_quarantine, clean_quarantine, conflict_quarantine], configured_scrubber(params)
    )


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


def split_records(
    records: pd.DataFrame,
    near_duplicate_groups: pd.DataFrame,
    near_duplicate_summary: Mapping[str, Any],
    params: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Group-aware, stratified, seeded train / val / test split
    (:func:`so8t_kedro.records.split.split_records`) and the summary of what it kept
    (:func:`so8t_kedro.records.quality_report.kept_records_summary`).

    The fractions must each be in [0, 1] and sum to 1, with a train fraction above 0.

    Args:
        records: ``unique_records`` from ``deduplicate_records``.
        near_duplicate_groups: from :func:`group_near_duplicates`.
        near_duplicate_summary: from :func:`group_near_duplicates`; the summary adds the
            number of groups the split placed in more than one split.
        params: ``params:data_processing.split``.

    Returns:
        ``train_records``, ``val_records``, ``test_records`` and ``split_summary``: how
        the records were split (``split``) and what each split kept, the report's input.
    """
    _, val_fraction, test_fraction = _split_fractions(params)
    train, val, test, summary = split.split_records(
        records,
        near_duplicate_groups,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        random_state=params["random_state"],
        allow_unstratified_fallback=params["allow_unstratified_fallback"],
    )
    kept = quality_report.kept_records_summary(
        train, val, test, near_duplicate_groups, near_duplicate_summary
    )
    return train, val, test, {"split": summary, **kept}
