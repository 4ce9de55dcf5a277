"""Reading request records from JSONL files, line by line, into raw records and a quarantine.

Both the flat schema (``text``, ``label``) and the nested one
(``quadruple_classification.four_class_label`` with ``text`` / ``original_text`` /
``instruction`` + ``input``) are accepted. A line that cannot be used (not UTF-8, not
JSON, not an object, a missing or mistyped field, a lone surrogate escape) is quarantined
with one of :data:`~so8t_kedro.records.schema.QUARANTINE_REASONS`. Blank
(whitespace-only) lines are *skipped but accounted*: they carry no record, so they are
counted per file instead of filling the quarantine with noise.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from so8t_kedro.records.schema import QUARANTINE_COLUMNS, RAW_COLUMNS, append_quarantine_row

_UTF8_BOM = b"\xef\xbb\xbf"
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


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
        append_quarantine_row(bad, file=name, line=line_no, source=source, id=record_id,
                              field=field, reason=reason, detail=f"{source}: {detail}",
                              raw=raw[:snippet])

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

        # Hot path (every kept line): plain appends, ~10 % faster than keyword arguments
        # to append_quarantine_row.
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
    out: dict[str, list] = {c: [] for c in RAW_COLUMNS}
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
