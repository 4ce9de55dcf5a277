"""The records an evaluation scores: the test split, or external JSONL files cleaned by
data_processing's own rules, with a quarantine of the lines that failed.

Shared by the evaluation and the A/B test, which score the same set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from so8t_kedro.records.cleaning import clean_records
from so8t_kedro.records.jsonl import matching_partitions, read_jsonl_files
from so8t_kedro.records.schema import QUARANTINE_COLUMNS, RECORD_COLUMNS, RecordAccountingError

logger = logging.getLogger(__name__)


def prepare_evaluation_set(
    test_records: pd.DataFrame,
    external_test_files: Mapping[str, Callable[[], bytes]],
    test_set_params: Mapping[str, Any],
    clean_params: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The records to evaluate on, and the quarantine of any external lines that failed.

    ``source: split`` takes data_processing's test split. ``source: external`` reads every
    file matching ``file_pattern`` in the ``external_test_files`` folder (any schema the
    ingest node accepts) and cleans it with data_processing's own rules (PII scrubbing
    included); bad lines are quarantined with file, line, field and reason, never dropped.
    External records are not deduplicated: a benchmark is scored as published.
    """
    source = test_set_params["source"]
    empty_quarantine = pd.DataFrame(columns=QUARANTINE_COLUMNS)
    if source == "split":
        return test_records[RECORD_COLUMNS].reset_index(drop=True), empty_quarantine
    if source != "external":
        raise ValueError(
            f"params:evaluation.test_set.source must be 'split' or 'external', got {source!r}"
        )
    pattern = test_set_params["file_pattern"]
    files, _ = matching_partitions(external_test_files, pattern)
    if not files:
        raise FileNotFoundError(
            "params:evaluation.test_set.source is 'external' but the external_test_files "
            f"folder (catalog entry external_test_files) has no files matching {pattern!r}; "
            f"found {sorted(external_test_files)}"
        )
    raw, read_quarantine, per_file = read_jsonl_files(
        files, int(test_set_params["raw_snippet_chars"]))
    records, clean_quarantine, _ = clean_records(raw, clean_params)
    quarantine = pd.concat([read_quarantine, clean_quarantine], ignore_index=True)
    blank = sum(f["blank_lines"] for f in per_file.values())
    lines = sum(f["lines_read"] for f in per_file.values())
    if len(records) + len(quarantine) + blank != lines:  # every line is accounted for
        raise RecordAccountingError(f"external test set: {len(records)} kept + {len(quarantine)} "
                           f"quarantined + {blank} blank != {lines} lines read")
    logger.info("External test set: %d files, %d lines, %d records kept, %d quarantined",
                len(files), lines, len(records), len(quarantine))
    if records.empty:
        raise ValueError(f"external test set: all {lines} lines were quarantined; see "
                         "evaluation_set_quarantine for the reasons")
    return records[RECORD_COLUMNS].reset_index(drop=True), quarantine
