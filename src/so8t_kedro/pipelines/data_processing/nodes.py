"""Nodes of the ``data_processing`` pipeline.

Raw four-class JSONL (any number of ``four_class_*.jsonl`` partitions plus the shipped
seed dataset) becomes clean, PII-scrubbed, deduplicated, stratified train/val/test
record tables, a quarantine table, a duplicate table and a data-quality report.

Nodes, in order: ``ingest_raw_records`` (bytes -> raw records; undecodable lines
quarantined) -> ``clean_records`` (NFKC, whitespace, labels, language, PII) ->
``deduplicate_records`` -> ``group_near_duplicates`` -> ``split_records`` (group-aware:
near-duplicate requests stay in one split); ``collect_quarantined_records`` joins the
three stage quarantines; ``build_data_quality_report`` and ``plot_label_distribution``
report on the result.

Accounting (asserted by :func:`build_data_quality_report`)::

    kept + quarantined + duplicates + blank_lines == lines_read

Every physical line of every ingested file ends in exactly one of those four buckets.
Blank (whitespace-only) lines are *skipped but accounted*: they carry no record, so
they are counted per file instead of filling the quarantine with noise.

Duplicates: records whose :func:`dedup_key` (NFKC + casefold, whitespace and
punctuation removed) matches an earlier record are duplicates of the first occurrence.
If the records sharing a key disagree on the label, *all* of them are quarantined with
reason ``label_conflict``: the data cannot tell which label is right, and a safety
classifier must not learn a coin flip.

Record contract of ``train_records`` / ``val_records`` / ``test_records``
(:data:`RECORD_COLUMNS`): ``id`` (str), ``text`` (str), ``label`` (one of ``LABELS``),
``label_id`` (int 0-3), ``language`` ("ja"/"en"), ``domain`` (str), ``source``
("<file>:<line>").
"""

from __future__ import annotations

import fnmatch
import functools
import json
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from sklearn.model_selection import train_test_split

from so8t_kedro.labels import LABEL_TO_ID, LABELS, normalise_label
from so8t_kedro.records.near_duplicates import dedup_key, near_duplicate_groups
from so8t_kedro.records.pii import ScrubResult, pii_scrubber
from so8t_kedro.think import LANGUAGES

logger = logging.getLogger(__name__)

RECORD_COLUMNS: list[str] = ["id", "text", "label", "label_id", "language", "domain", "source"]
# The intermediate tables carry where each record came from, for the quarantine.
_TRACE_COLUMNS: list[str] = ["file", "line", "raw"]
# Raw records: label and metadata as found, text not yet cleaned.
_RAW_COLUMNS: list[str] = [
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

_UTF8_BOM = b"\xef\xbb\xbf"


class RecordAccountingError(RuntimeError):
    """Records were lost or invented: the ``kept + quarantined + duplicates`` sum is off."""


# --------------------------------------------------------------------------- helpers


def _param(params: Mapping[str, Any], key: str, section: str, kind: type | tuple[type, ...]):
    """Read ``params[key]``, raising a message that names ``params:<section>.<key>``."""
    name = f"params:data_processing.{section}.{key}"
    if key not in params:
        raise KeyError(f"{name} is missing (conf/base/parameters_data_processing.yml)")
    value = params[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        kinds = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise TypeError(f"{name} must be of type {kinds}, got {value!r}")
    return value


def _append_row(table: dict[str, list], **values: Any) -> None:
    """Append one quarantine row to a column-oriented table (a missing column leaves the
    lists of unequal length, which the DataFrame built from them rejects)."""
    for column, value in values.items():
        table[column].append(value)


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# ------------------------------------------------------------------ text cleaning

_CONTROL_RE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u200b-\u200d\u2060\ufeff]")
_NEWLINE_RE = re.compile("\r\n?|[\x85\u2028\u2029]")
_HSPACE_RE = re.compile(r"[^\S\n]+")
_SPACE_AROUND_NEWLINE_RE = re.compile(r" ?\n ?")
_MANY_NEWLINES_RE = re.compile(r"\n{3,}")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_JA_RE = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]")


def normalise_text(text: str) -> str:
    """NFKC-normalise and tidy whitespace, keeping paragraph structure.

    Control and zero-width characters are removed, line endings become ``\\n``, runs of
    other whitespace become one space, lines are stripped, more than one blank line in
    a row becomes one, and the result is stripped.
    """
    text = unicodedata.normalize("NFKC", text)
    text = _CONTROL_RE.sub("", text)
    text = _NEWLINE_RE.sub("\n", text)
    text = _HSPACE_RE.sub(" ", text)
    if "\n" in text:
        text = _SPACE_AROUND_NEWLINE_RE.sub("\n", text)
        text = _MANY_NEWLINES_RE.sub("\n\n", text)
    return text.strip()


def detect_language(text: str) -> str:
    """``"ja"`` if the text has any hiragana, katakana or CJK ideograph, else ``"en"``."""
    return "ja" if _JA_RE.search(text) else "en"


# ------------------------------------------------------------------------ ingest


def _extract_text(obj: dict) -> tuple[str, str | None, str | None]:
    """``(field, text, error)`` from a flat or nested record; ``error`` is a reason code."""
    for field in ("text", "original_text"):
        value = obj.get(field)
        if value is not None:
            return (field, value, None) if isinstance(value, str) else (field, None, "wrong_type")
    instruction = obj.get("instruction")
    if instruction is None:
        return "text", None, "missing_text"
    if not isinstance(instruction, str):
        return "instruction", None, "wrong_type"
    extra = obj.get("input")
    if extra is None or extra == "":
        return "instruction", instruction, None
    if not isinstance(extra, str):
        return "input", None, "wrong_type"
    return "instruction+input", f"{instruction}\n{extra}", None


def _extract_label(obj: dict) -> tuple[str, Any, str | None]:
    """``(field, raw_label, error)``; the nested label wins over a flat ``label``."""
    nested = obj.get("quadruple_classification")
    if nested is not None:
        if not isinstance(nested, dict):
            return "quadruple_classification", None, "wrong_type"
        value = nested.get("four_class_label")
        if value is not None:
            field = "quadruple_classification.four_class_label"
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                return field, None, "wrong_type"
            return (field, None, "missing_label") if value == "" else (field, value, None)
    value = obj.get("label")
    if value is None:
        return "label", None, "missing_label"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return "label", None, "wrong_type"
    if isinstance(value, str) and not value.strip():
        return "label", None, "missing_label"
    return "label", value, None


def _read_jsonl(name: str, data: bytes, snippet: int, out: dict[str, list], bad: dict[str, list]):
    """Decode one JSONL file line by line into ``out`` (records) and ``bad`` (quarantine).

    Returns the file's summary: lines read, blank lines, whether a BOM was stripped.
    """
    lines = data.split(b"\n")
    if lines[-1] == b"":  # the final newline ends the last line; it opens no new one
        lines.pop()
    bom = data.startswith(_UTF8_BOM)
    blank = 0

    def quarantine(line_no, field, reason, detail, raw, record_id=None):
        source = f"{name}:{line_no}"
        _append_row(bad, file=name, line=line_no, source=source, id=record_id, field=field,
                    reason=reason, detail=f"{source}: {detail}", raw=raw[:snippet])

    for line_no, raw_bytes in enumerate(lines, 1):
        if raw_bytes.endswith(b"\r"):
            raw_bytes = raw_bytes[:-1]
        if line_no == 1 and bom:
            raw_bytes = raw_bytes[len(_UTF8_BOM) :]
        try:
            line = raw_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            detail = f"byte {exc.start} is not UTF-8 ({exc.reason})"
            raw = raw_bytes[: snippet * 4].decode("utf-8", "replace")
            quarantine(line_no, None, "invalid_utf8", detail, raw)
            continue
        if not line or line.isspace():
            blank += 1
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            msg = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            quarantine(line_no, None, "malformed_json", msg, line)
            continue
        if not isinstance(obj, dict):
            detail = f"expected a JSON object, got {_json_type(obj)}"
            quarantine(line_no, None, "not_an_object", detail, line)
            continue

        record_id = obj.get("id")
        if record_id is None or record_id == "":
            record_id = f"{name}:{line_no}"
        elif isinstance(record_id, int) and not isinstance(record_id, bool):
            record_id = str(record_id)
        elif isinstance(record_id, str):
            record_id = record_id.strip() or f"{name}:{line_no}"
        else:
            detail = f"field 'id' must be a string or an integer, got {_json_type(record_id)}"
            quarantine(line_no, "id", "wrong_type", detail, line)
            continue

        text_field, text, error = _extract_text(obj)
        field = text_field
        if error is None:
            field, label, error = _extract_label(obj)
        if error is None:
            for meta in ("language", "domain"):
                value = obj.get(meta)
                if value is not None and not isinstance(value, str):
                    field, error = meta, "wrong_type"
                    break
        if error is not None:
            if error == "wrong_type":
                value = obj
                for part in field.split("+")[-1].split("."):
                    value = value.get(part) if isinstance(value, dict) else None
                detail = f"field '{field}' has the wrong type ({_json_type(value)})"
            elif error == "missing_text":
                detail = "no 'text', 'original_text' or 'instruction' field"
            else:  # missing_label
                detail = f"no label ('{field}' is missing or empty)"
            quarantine(line_no, field, error, detail, line, record_id)
            continue
        if "\\u" in line:  # a \uD800-style escape can smuggle in a lone surrogate
            fields = {
                text_field: text,
                field: label,
                "id": record_id,
                "language": obj.get("language"),
                "domain": obj.get("domain"),
            }
            bad_field = next(
                (f for f, v in fields.items() if isinstance(v, str) and _SURROGATE_RE.search(v)),
                None,
            )
            if bad_field is not None:
                detail = f"field '{bad_field}' has a lone surrogate escape"
                usable_id = None if bad_field == "id" else record_id
                quarantine(line_no, bad_field, "invalid_utf8", detail, line, usable_id)
                continue

        # Hot path (every kept line): plain appends, ~10 % faster than _append_row's kwargs.
        out["file"].append(name)
        out["line"].append(line_no)
        out["source"].append(f"{name}:{line_no}")
        out["id"].append(record_id)
        out["text"].append(text)
        out["label"].append(label)
        out["label_field"].append(field)
        out["language"].append(obj.get("language") or "")
        out["domain"].append(obj.get("domain") or "")
        out["raw"].append(line[:snippet])

    return {"lines_read": len(lines), "blank_lines": blank, "utf8_bom_stripped": bom}


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
    pattern = _param(params, "partition_pattern", "ingest", str)
    seed_name = _param(params, "seed_file_name", "ingest", str)
    snippet = _param(params, "raw_snippet_chars", "ingest", int)

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


def matching_partitions(
    partitions: Mapping[str, Callable[[], bytes]], pattern: str
) -> tuple[list[tuple[str, Callable[[], bytes]]], list[str]]:
    """The top-level partitions whose id matches ``pattern`` as (id, loader), sorted by id,
    and the ids of the others (sub-folders included), which are not read."""
    files, ignored = [], []
    for partition_id in sorted(partitions):
        if "/" not in partition_id and fnmatch.fnmatchcase(partition_id, pattern):
            files.append((partition_id, partitions[partition_id]))
        else:
            ignored.append(partition_id)
    return files, ignored


def read_jsonl_files(
    files: list[tuple[str, Callable[[], bytes]]], snippet: int
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict[str, Any]]]:
    """Decode ``(name, load)`` JSONL files line by line: raw records (text and label not yet
    cleaned), their quarantine, and each file's summary (lines read, blank lines, BOM)."""
    out: dict[str, list] = {c: [] for c in _RAW_COLUMNS}
    bad: dict[str, list] = {c: [] for c in QUARANTINE_COLUMNS}
    per_file: dict[str, dict[str, Any]] = {}
    for name, load in files:
        data = load()
        if isinstance(data, str):  # a TextDataset configured without mode "rb"
            data = data.encode("utf-8")
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(
                f"{name}: expected the file's bytes from the catalog, got {type(data).__name__} "
                "(configure the dataset with fs_args.open_args_load.mode: rb)"
            )
        per_file[name] = _read_jsonl(name, bytes(data), snippet, out, bad)
    # Intermediate tables stay object-typed: cheap to build and to iterate.
    raw = pd.DataFrame(out, columns=list(out), dtype=object)
    return raw, pd.DataFrame(bad, columns=QUARANTINE_COLUMNS), per_file


# -------------------------------------------------------------------------- clean


@functools.lru_cache(maxsize=1024)
def _normalise_language(value: str) -> str | None:
    """``"ja"``, ``"JA"``, ``"ja-JP"``, ``"Japanese"`` -> ``"ja"``; ``""`` -> ``""``; else None."""
    key = value.strip().lower().replace("_", "-").split("-")[0]
    if key in LANGUAGES or key == "":
        return key
    return {"japanese": "ja", "english": "en", "jpn": "ja", "eng": "en"}.get(key)


def clean_records(
    raw_records: pd.DataFrame, params: Mapping[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Normalise texts, labels and languages and scrub PII.

    Texts are NFKC-normalised with whitespace collapsed (:func:`normalise_text`);
    empty texts and texts over ``max_text_chars`` characters are quarantined, as are
    unknown labels and languages other than ja / en. A missing language is detected
    from the text, a missing domain becomes ``"unknown"``. When ``scrub_pii`` is on,
    PII is replaced with typed placeholders by the Presidio + GiNZA scrubber
    (:mod:`so8t_kedro.records.pii`, ``params["pii"]``), batched per language; a record
    the engine fails on is quarantined as ``pii_scrub_failed`` with the error.

    Args:
        raw_records: output of :func:`ingest_raw_records`.
        params: ``params:data_processing.clean``.

    Returns:
        Clean records (:data:`RECORD_COLUMNS` plus trace columns), their quarantine,
        and the PII replacements of the kept records: ``by_type`` (every configured
        entity type) and ``by_file`` (file -> type -> count, files with any).
    """
    max_chars = _param(params, "max_text_chars", "clean", int)
    if max_chars <= 0:
        raise ValueError(
            f"params:data_processing.clean.max_text_chars must be > 0, got {max_chars}"
        )
    scrubber = None
    if _param(params, "scrub_pii", "clean", bool):
        scrubber = pii_scrubber(_param(params, "pii", "clean", Mapping))

    bad: dict[str, list] = {c: [] for c in QUARANTINE_COLUMNS}

    def quarantine(row: tuple, field: str, reason: str, detail: str) -> None:
        file, line, source, record_id, *_, raw = row  # a row of _RAW_COLUMNS
        _append_row(bad, file=file, line=line, source=source, id=record_id, field=field,
                    reason=reason, detail=f"{source}: {detail}", raw=raw)

    # Pass 1: labels, text, language; pass 2 (after batched scrubbing): length, output.
    candidates: list[tuple[tuple, str, str, str]] = []  # (row, label, text, language)
    for row in zip(*(raw_records[c].tolist() for c in _RAW_COLUMNS), strict=True):
        _, _, _, _, text, raw_label, label_field, language, _, _ = row
        try:
            label = normalise_label(raw_label)
        except (TypeError, ValueError) as exc:
            quarantine(row, label_field, "unknown_label", str(exc))
            continue
        text = normalise_text(text)
        if not text:
            quarantine(row, "text", "empty_text", "text is empty after normalisation")
            continue
        lang = _normalise_language(language)
        if lang is None:
            detail = f"language {language!r} is not one of ja, en"
            quarantine(row, "language", "unsupported_language", detail)
            continue
        candidates.append((row, label, text, lang or detect_language(text)))

    if scrubber is None:
        scrubbed = [ScrubResult(text) for _, _, text, _ in candidates]
        entity_types: list[str] = []
    else:
        scrubbed = scrubber.scrub([c[2] for c in candidates], [c[3] for c in candidates])
        entity_types = scrubber.entities
    by_type: Counter = Counter({t: 0 for t in entity_types})
    by_file: dict[str, Counter] = {}

    out: dict[str, list] = {c: [] for c in RECORD_COLUMNS + _TRACE_COLUMNS}
    for (row, label, _, lang), result in zip(candidates, scrubbed, strict=True):
        file, line, source, record_id, _, _, _, _, domain, raw = row
        if result.error is not None:
            quarantine(row, "text", "pii_scrub_failed", f"PII engine error: {result.error}")
            continue
        text = result.text
        if len(text) > max_chars:  # after scrubbing: placeholders can be longer than PII
            detail = f"text has {len(text)} characters (max_text_chars={max_chars})"
            quarantine(row, "text", "text_too_long", detail)
            continue
        if result.counts:  # count the PII of records that pass cleaning only
            by_type.update(result.counts)
            by_file.setdefault(file, Counter()).update(result.counts)
        out["id"].append(record_id)
        out["text"].append(text)
        out["label"].append(label)
        out["label_id"].append(LABEL_TO_ID[label])
        out["language"].append(lang)
        out["domain"].append(domain.strip() or UNKNOWN_DOMAIN)
        out["source"].append(source)
        out["file"].append(file)
        out["line"].append(line)
        out["raw"].append(raw)

    records = pd.DataFrame(out, columns=list(out), dtype=object)
    records["label_id"] = records["label_id"].astype("int64")
    records["line"] = records["line"].astype("int64")
    pii_counts = {
        "by_type": dict(by_type),
        "by_file": {name: dict(counts) for name, counts in by_file.items()},
    }
    return records, pd.DataFrame(bad, columns=QUARANTINE_COLUMNS), pii_counts


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
    ngram = _param(params, "ngram", "near_duplicates", int)
    threshold = float(_param(params, "threshold", "near_duplicates", (int, float)))
    num_perm = _param(params, "num_perm", "near_duplicates", int)
    seed = _param(params, "seed", "near_duplicates", int)
    max_indexed = _param(params, "max_indexed_per_group", "near_duplicates", int)
    n_examples = _param(params, "report_examples", "near_duplicates", int)
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
    if _param(params, "scrub_pii", "clean", bool):
        scrubber = pii_scrubber(_param(params, "pii", "clean", Mapping))
        raws = [normalise_text(raw or "") for raw in quarantine["raw"].tolist()]
        results = scrubber.scrub(raws, [detect_language(raw) for raw in raws])
        # A snippet the engine fails on is dropped, never kept unscrubbed.
        quarantine["raw"] = [r.text if r.error is None else "" for r in results]
    return quarantine


# -------------------------------------------------------------------------- split


def _split_fractions(params: Mapping[str, Any]) -> tuple[float, float, float]:
    fractions = []
    for key in ("train_fraction", "val_fraction", "test_fraction"):
        value = float(_param(params, key, "split", (int, float)))
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
    seed = _param(params, "random_state", "split", int)
    fallback = _param(params, "allow_unstratified_fallback", "split", bool)
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
