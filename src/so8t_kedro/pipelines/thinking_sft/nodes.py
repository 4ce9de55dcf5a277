"""Nodes of the `thinking_sft` pipeline.

The /think format itself (template, tags, phrasing, parsing) lives in
``so8t_kedro.think`` and the phrase bank; these nodes only apply it to the catalog's records.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from so8t_kedro.labels import LABEL_TO_ID, LABELS
from so8t_kedro.records.schema import RECORD_COLUMNS, SPLITS
from so8t_kedro.think import (
    FORMATS,
    LANGUAGES,
    PhraseBank,
    parse_reply,
    render_sample,
    resolve_domain,
)

logger = logging.getLogger(__name__)

OUTPUT_COLUMNS: tuple[str, ...] = ("id", "split", "format", "prompt", "completion", "text",
                                   "label", "label_id", "language", "domain", "source")
LENGTH_COLUMNS: tuple[str, ...] = ("prompt", "completion", "text")


def combine_splits(
    train_records: pd.DataFrame, val_records: pd.DataFrame, test_records: pd.DataFrame
) -> pd.DataFrame:
    """Stack the three splits into one frame with a ``split`` column.

    Checks the data_processing contract: the input columns are present, labels, label ids
    and languages are valid, and ids are unique across the splits (the id keys each
    record's phrasing).
    """
    frames = []
    for split, frame in zip(SPLITS, (train_records, val_records, test_records)):
        missing = [c for c in RECORD_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"{split}_records lacks columns {missing}")
        frames.append(frame.loc[:, RECORD_COLUMNS].assign(split=split))
    records = pd.concat(frames, ignore_index=True)
    records["id"] = records["id"].astype(str)

    bad_labels = sorted(set(records["label"]) - set(LABELS))
    if bad_labels:
        raise ValueError(f"unknown labels {bad_labels}; expected {LABELS}")
    wrong_ids = records["label_id"].astype(int) != records["label"].map(LABEL_TO_ID)
    if wrong_ids.any():
        raise ValueError(f"label_id disagrees with label for ids "
                         f"{records.loc[wrong_ids, 'id'].head(5).tolist()}")
    bad_languages = sorted(set(records["language"]) - set(LANGUAGES))
    if bad_languages:
        raise ValueError(f"unsupported languages {bad_languages}; expected {LANGUAGES}")
    duplicated = records["id"].duplicated(keep=False)
    if duplicated.any():
        raise ValueError(f"duplicate ids across splits: "
                         f"{sorted(set(records.loc[duplicated, 'id']))[:5]}")
    return records


def _render_row(bank: PhraseBank, row: Any, fmt: str, seed: object,
                max_quoted_chars: int) -> dict[str, str]:
    return render_sample(bank, row.label, row.domain, row.text, row.language, fmt,
                         rng_key=f"{seed}:{row.id}", max_quoted_chars=max_quoted_chars)


def _check_round_trip(samples: pd.DataFrame) -> None:
    failures = []
    for row in samples.itertuples(index=False):
        reply = parse_reply(row.completion)
        if reply.decision != row.label or not reply.well_formed:
            failures.append(f"{row.id}: decision={reply.decision} problems={reply.problems}")
    if failures:
        raise ValueError(f"{len(failures)} rendered samples do not parse back: {failures[:3]}")


def render_thinking_sft_samples(records: pd.DataFrame, phrase_bank: dict[str, Any],
                                params: dict[str, Any]) -> pd.DataFrame:
    """Render each record as a /think chat sample (``prompt``, ``completion``, ``text``).

    Phrasing is chosen per record from ``params["seed"]`` and the record id, so the output
    does not depend on row order; rows are sorted by split (train, val, test) then id.
    ``domain`` holds the resolved domain (``"unknown"`` is inferred from keywords).

    Args:
        records: output of ``combine_splits``.
        phrase_bank: the phrase bank's content (``conf/base/think_phrase_bank.yml``),
            checked here (:class:`~so8t_kedro.think.PhraseBank`).
        params: ``format`` (quadruple | sections), ``seed``, ``max_quoted_chars``,
            ``validate_round_trip``.
    """
    fmt = params["format"]
    if fmt not in FORMATS:
        raise ValueError(f"thinking_sft.format must be one of {FORMATS}, got {fmt!r}")
    seed = params["seed"]
    max_quoted_chars = int(params["max_quoted_chars"])
    bank = PhraseBank.from_dict(phrase_bank, source="think_phrase_bank")

    records = records.copy()
    records["domain"] = [
        resolve_domain(bank, domain, label, text)
        for domain, label, text in zip(records["domain"], records["label"], records["text"])
    ]
    rendered = pd.DataFrame(
        [_render_row(bank, row, fmt, seed, max_quoted_chars)
         for row in records.itertuples(index=False)],
        columns=["prompt", "completion", "text"],
        index=records.index,
    )
    samples = records.drop(columns=["text"]).join(rendered).assign(format=fmt)
    samples["label_id"] = samples["label"].map(LABEL_TO_ID).astype(int)
    split_rank = samples["split"].map({s: i for i, s in enumerate(SPLITS)})
    samples = (
        samples.assign(_rank=split_rank)
        .sort_values(["_rank", "id"], kind="stable")
        .loc[:, list(OUTPUT_COLUMNS)]
        .reset_index(drop=True)
    )
    if params["validate_round_trip"]:
        _check_round_trip(samples)
    logger.info("Rendered %d /think samples (%s format)", len(samples), fmt)
    return samples


def _length_summary(lengths: pd.Series) -> dict[str, float]:
    values = lengths.to_numpy()
    if values.size == 0:
        return {"min": 0, "p50": 0.0, "p95": 0.0, "max": 0, "mean": 0.0}
    return {
        "min": int(values.min()),
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "max": int(values.max()),
        "mean": round(float(values.mean()), 2),
    }


def _counts(series: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in series.value_counts().sort_index().items()}


def summarise_thinking_sft(dataset: pd.DataFrame) -> dict[str, Any]:
    """Sample counts per split / label / format / language / domain, split x label, and
    the character-length distribution (min, p50, p95, max, mean) of prompt, completion
    and text."""
    by_split_label = {
        split: _counts(dataset.loc[dataset["split"] == split, "label"])
        for split in SPLITS
        if (dataset["split"] == split).any()
    }
    return {
        "n_samples": len(dataset),
        "by_split": _counts(dataset["split"]),
        "by_label": _counts(dataset["label"]),
        "by_format": _counts(dataset["format"]),
        "by_language": _counts(dataset["language"]),
        "by_domain": _counts(dataset["domain"]),
        "by_split_label": by_split_label,
        "char_length": {
            column: _length_summary(dataset[column].str.len()) for column in LENGTH_COLUMNS
        },
    }
