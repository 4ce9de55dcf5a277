"""Cleaning raw request records: texts, labels and languages normalised, PII scrubbed.

A record that cannot be cleaned (an unknown label, an unsupported language, an empty or
too long text, a text the PII engine fails on) is quarantined with its reason, never
passed through.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pandas as pd

from so8t_kedro.labels import LABEL_TO_ID, normalise_label
from so8t_kedro.records.pii import ScrubberPool, ScrubResult
from so8t_kedro.records.schema import (
    QUARANTINE_COLUMNS,
    RAW_COLUMNS,
    RECORD_COLUMNS,
    TRACE_COLUMNS,
    UNKNOWN_DOMAIN,
    append_quarantine_row,
)
from so8t_kedro.records.text import detect_language, normalise_text
from so8t_kedro.think import LANGUAGES


@functools.lru_cache(maxsize=1024)
def _normalise_language(value: str) -> str | None:
    """``"ja"``, ``"JA"``, ``"ja-JP"``, ``"Japanese"`` -> ``"ja"``; ``""`` -> ``""``; else None."""
    key = value.strip().lower().replace("_", "-").split("-")[0]
    if key in LANGUAGES or key == "":
        return key
    return {"japanese": "ja", "english": "en", "jpn": "ja", "eng": "en"}.get(key)


def configured_scrubber(params: Mapping[str, Any]) -> ScrubberPool | None:
    """The PII scrubber of ``params:data_processing.clean`` (in ``scrub_processes``
    worker processes for a large batch), or None when ``scrub_pii`` is off."""
    if not params["scrub_pii"]:
        return None
    return ScrubberPool(params["pii"], params["scrub_processes"], params["min_texts_per_process"])


def clean_records(
    raw_records: pd.DataFrame, params: Mapping[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Normalise texts, labels and languages and scrub PII.

    Texts are NFKC-normalised with whitespace collapsed (:func:`normalise_text`);
    empty texts and texts over ``max_text_chars`` characters are quarantined, as are
    unknown labels and languages other than ja / en. A missing language is detected
    from the text, a missing domain becomes ``"unknown"``. When ``scrub_pii`` is on,
    PII is replaced with typed placeholders by the Presidio + GiNZA scrubber
    (:mod:`so8t_kedro.records.pii`, ``params["pii"]``), batched per language and spread
    over ``scrub_processes`` worker processes; a record the engine fails on is quarantined
    as ``pii_scrub_failed`` with the error.

    Args:
        raw_records: raw records (:data:`~so8t_kedro.records.schema.RAW_COLUMNS`), as
            :func:`~so8t_kedro.records.jsonl.read_jsonl_files` reads them.
        params: ``params:data_processing.clean``.

    Returns:
        Clean records (:data:`RECORD_COLUMNS` plus trace columns), their quarantine,
        and the PII replacements of the kept records: ``by_type`` (every configured
        entity type) and ``by_file`` (file -> type -> count, files with any).
    """
    max_chars = params["max_text_chars"]
    if max_chars <= 0:
        raise ValueError(
            f"params:data_processing.clean.max_text_chars must be > 0, got {max_chars}"
        )
    scrubber = configured_scrubber(params)

    bad: dict[str, list] = {c: [] for c in QUARANTINE_COLUMNS}

    def quarantine(row: tuple, field: str, reason: str, detail: str) -> None:
        file, line, source, record_id, *_, raw = row  # a row of RAW_COLUMNS
        append_quarantine_row(bad, file=file, line=line, source=source, id=record_id,
                              field=field, reason=reason, detail=f"{source}: {detail}", raw=raw)

    # Pass 1: labels, text, language; pass 2 (after batched scrubbing): length, output.
    candidates: list[tuple[tuple, str, str, str]] = []  # (row, label, text, language)
    for row in zip(*(raw_records[c].tolist() for c in RAW_COLUMNS), strict=True):
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

    out: dict[str, list] = {c: [] for c in RECORD_COLUMNS + TRACE_COLUMNS}
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
