"""PII scrubbing in worker processes (so8t_kedro.records.pii.processes): the same results as
one process, in input order, and a chunk whose worker dies is scrubbed anyway."""

from __future__ import annotations

import json
import logging
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from so8t_kedro.records.pii import ScrubberPool, processes
from so8t_kedro.records.pii.processes import CHUNKS_PER_PROCESS
from tests.helpers.project import project_parameters

BENCHMARK = Path(__file__).resolve().parent / "data/pii_benchmark.jsonl"
TEXTS = 240  # 2 processes x 8 chunks of 15 texts


@pytest.fixture(scope="module")
def pii_params() -> dict[str, Any]:
    return project_parameters()["pii"]  # read only here


@pytest.fixture(scope="module")
def benchmark_texts() -> tuple[list[str], list[str]]:
    """Every 60th benchmark case (persons, secrets, addresses and look-alikes, both
    languages), NFKC-normalised as the pipeline does."""
    cases = [json.loads(line) for line in BENCHMARK.read_text("utf-8").splitlines()][::60]
    cases = cases[:TEXTS]
    assert len(cases) == TEXTS
    return ([unicodedata.normalize("NFKC", c["text"]) for c in cases],
            [c["language"] for c in cases])


@pytest.fixture(scope="module")
def in_one_process(pii_params, benchmark_texts):
    return ScrubberPool(pii_params, 1, 1).scrub(*benchmark_texts)


def test_process_count_follows_the_batch_size(pii_params):
    pool = ScrubberPool(pii_params, 4, 5000)
    assert [pool.process_count(n) for n in (0, 781, 9999, 10_000, 19_999, 100_000)] == [
        1, 1, 1, 2, 3, 4]
    assert ScrubberPool(pii_params, None, 1).processes == processes.usable_cores()
    for bad in ({"processes": 0, "min_texts_per_process": 1},
                {"processes": 2, "min_texts_per_process": 0}):
        with pytest.raises(ValueError, match="must be >= 1"):
            ScrubberPool(pii_params, **bad)


def test_workers_give_the_results_of_one_process_in_order(pii_params, benchmark_texts,
                                                          in_one_process, caplog):
    pool = ScrubberPool(pii_params, 2, TEXTS // 2)
    assert pool.process_count(TEXTS) == 2
    with caplog.at_level(logging.INFO, logger=processes.__name__):
        in_workers = pool.scrub(*benchmark_texts)
    assert f"Scrubbing {TEXTS} texts in 2 processes ({2 * CHUNKS_PER_PROCESS} chunks)" in (
        caplog.text)
    assert in_workers == in_one_process
    # Not a vacuous comparison: the sample holds PII of several types, and look-alikes.
    replaced = [r for r in in_one_process if r.counts]
    assert {t for r in replaced for t in r.counts} >= {"PERSON", "SECRET", "PHONE_NUMBER", "ADDRESS"}
    assert 0 < len(replaced) < TEXTS


def test_a_chunk_whose_worker_dies_is_scrubbed_in_the_main_process(
        pii_params, benchmark_texts, in_one_process, monkeypatch, caplog):
    from tests.helpers.records import exit_worker

    monkeypatch.setattr(processes, "_scrub_chunk", exit_worker)
    with caplog.at_level(logging.WARNING, logger=processes.__name__):
        results = ScrubberPool(pii_params, 2, TEXTS // 2).scrub(*benchmark_texts)
    assert results == in_one_process
    assert "A PII worker failed on texts 0-14 (BrokenProcessPool" in caplog.text
