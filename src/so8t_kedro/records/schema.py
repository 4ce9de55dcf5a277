"""The record tables' contract: their columns, the splits and the quarantine reasons.

Record contract of ``train_records`` / ``val_records`` / ``test_records``
(:data:`RECORD_COLUMNS`): ``id`` (str), ``text`` (str), ``label`` (one of ``LABELS``),
``label_id`` (int 0-3), ``language`` ("ja"/"en"), ``domain`` (str), ``source``
("<file>:<line>").

Every line read ends in exactly one place: a kept record, a quarantine row (with one of
:data:`QUARANTINE_REASONS`), a duplicate, or the count of blank lines; a sum that does not
add up is a :class:`RecordAccountingError`.
"""

from __future__ import annotations

from typing import Any

RECORD_COLUMNS: list[str] = ["id", "text", "label", "label_id", "language", "domain", "source"]
# The intermediate tables carry where each record came from, for the quarantine.
TRACE_COLUMNS: list[str] = ["file", "line", "raw"]
# Raw records: label and metadata as found, text not yet cleaned.
RAW_COLUMNS: list[str] = [
    "file",
    "line",
    "source",
    "id",
    "text",
    "label",
    "label_field",
    "language",
    "domain",
    "raw",
]
QUARANTINE_COLUMNS: list[str] = ["file", "line", "source", "id", "field", "reason", "detail", "raw"]
DUPLICATE_COLUMNS: list[str] = [
    *RECORD_COLUMNS,
    "duplicate_of_id",
    "duplicate_of_source",
    "match",
]
# One row per record of a near-duplicate group of 2+ records; `group` is the id of the
# group's first record. Records not listed are groups of one.
NEAR_DUPLICATE_GROUP_COLUMNS: list[str] = ["group", "id", "label", "source", "text"]
# Machine-readable quarantine reasons, each produced by exactly one rule.
QUARANTINE_REASONS: tuple[str, ...] = (
    "invalid_utf8",  # a line that is not UTF-8 (or a string with a lone surrogate)
    "malformed_json",  # a line that does not parse (truncated, garbage, too deeply nested)
    "not_an_object",  # valid JSON but not an object (array, string, number, null)
    "missing_text",  # no text / original_text / instruction field (or all null)
    "wrong_type",  # a field with the wrong JSON type (e.g. a number for the text)
    "missing_label",  # no label at all, or an empty one
    "unknown_label",  # a label that normalise_label cannot map
    "unsupported_language",  # a language other than ja / en
    "empty_text",  # nothing left after cleaning
    "text_too_long",  # more than clean.max_text_chars characters after cleaning
    "label_conflict",  # same normalised text, different labels (all copies)
    "pii_scrub_failed",  # the PII engine raised on the text: never kept unscrubbed
)
SPLITS: tuple[str, ...] = ("train", "val", "test")
UNKNOWN_DOMAIN = "unknown"


class RecordAccountingError(RuntimeError):
    """Records were lost or invented: the ``kept + quarantined + duplicates`` sum is off."""


def append_quarantine_row(table: dict[str, list], **values: Any) -> None:
    """Append one quarantine row to a column-oriented table (a missing column leaves the
    lists of unequal length, which the DataFrame built from them rejects)."""
    for column, value in values.items():
        table[column].append(value)
