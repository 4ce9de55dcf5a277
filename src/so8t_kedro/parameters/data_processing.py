"""``conf/base/parameters_data_processing.yml``: ``data_processing``."""

from __future__ import annotations

from typing import Any

from so8t_kedro.parameters._base import Strict


class IngestParameters(Strict):
    partition_pattern: str
    seed_file_name: str
    raw_snippet_chars: int


class CleanParameters(Strict):
    max_text_chars: int
    scrub_pii: bool
    scrub_processes: int | None
    min_texts_per_process: int
    # ``${pii}``: validated as parameters_pii.yml's ``pii`` (the same dict).
    pii: dict[str, Any]


class NearDuplicateParameters(Strict):
    ngram: int
    threshold: float
    num_perm: int
    seed: int
    max_indexed_per_group: int
    report_examples: int


class SplitParameters(Strict):
    train_fraction: float
    val_fraction: float
    test_fraction: float
    random_state: int
    allow_unstratified_fallback: bool


class DataProcessingParameters(Strict):
    ingest: IngestParameters
    clean: CleanParameters
    near_duplicates: NearDuplicateParameters
    split: SplitParameters


class DataProcessingFile(Strict):
    data_processing: DataProcessingParameters
