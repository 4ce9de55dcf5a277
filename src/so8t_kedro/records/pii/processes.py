"""Scrubbing on every core: the texts of a cleaning run are cut into contiguous chunks
that worker processes scrub, each with its own engine (the engine is pure Python and
Cython under the GIL, so threads would not help). Results come back in input order and
are the same as one process's: each text is scrubbed on its own.

Workers are spawned, not forked: a fork of a process that has started torch's or
OpenMP's threads can hang, and spawn is what Windows and macOS use anyway. Each worker
loads the engine once (seconds, and memory), so a batch too small to pay for that stays
in this process.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
from collections.abc import Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from so8t_kedro.records.pii.config import PiiConfig
from so8t_kedro.records.pii.engine import PiiScrubber, ScrubResult, _cached_scrubber

logger = logging.getLogger(__name__)

# Chunks per worker: enough that a worker with easy texts takes more chunks instead of
# waiting for one with hard ones, few enough that each chunk fills the NER batches.
CHUNKS_PER_PROCESS = 8


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class ScrubberPool:
    """:meth:`PiiScrubber.scrub` over ``processes`` worker processes (None: one per
    usable core), using fewer where fewer than ``min_texts_per_process`` texts would go
    to each, and this process alone below that."""

    def __init__(self, params: Mapping[str, Any], processes: int | None,
                 min_texts_per_process: int):
        if processes is not None and processes < 1:
            raise ValueError(f"scrub_processes must be >= 1 or null, got {processes}")
        if min_texts_per_process < 1:
            raise ValueError(f"min_texts_per_process must be >= 1, got {min_texts_per_process}")
        config = PiiConfig.model_validate(dict(params))
        self._config_json = config.model_dump_json()
        self.entities = config.entity_types
        self.processes = processes or usable_cores()
        self.min_texts_per_process = min_texts_per_process

    @property
    def scrubber(self) -> PiiScrubber:
        """This process's engine (built on first use, then cached)."""
        return _cached_scrubber(self._config_json)

    def process_count(self, texts: int) -> int:
        """How many processes scrub ``texts`` texts (1: this one)."""
        return max(1, min(self.processes, texts // self.min_texts_per_process))

    def scrub(self, texts: Sequence[str], languages: Sequence[str]) -> list[ScrubResult]:
        """Scrub texts in order, as :meth:`PiiScrubber.scrub` does. A chunk whose worker
        fails (a crash in native code kills the process) is scrubbed again here, so that
        its texts are scrubbed or quarantined like any other, never lost."""
        if len(texts) != len(languages):
            raise ValueError(f"{len(texts)} texts but {len(languages)} languages")
        processes = self.process_count(len(texts))
        if processes == 1:
            return self.scrubber.scrub(texts, languages)
        size = -(-len(texts) // (processes * CHUNKS_PER_PROCESS))
        starts = range(0, len(texts), size)
        logger.info("Scrubbing %d texts in %d processes (%d chunks)", len(texts), processes,
                    len(starts))
        results: list[ScrubResult] = []
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            processes, mp_context=context, initializer=_cached_scrubber,
            initargs=(self._config_json,),  # each worker loads its engine before any chunk
        ) as pool:
            futures = [_submit(pool, self._config_json, list(texts[s : s + size]),
                               list(languages[s : s + size])) for s in starts]
            for start, future in zip(starts, futures, strict=True):
                end = min(start + size, len(texts))
                try:
                    results += future.result()
                except Exception as exc:  # noqa: BLE001 - the chunk is scrubbed here instead
                    logger.warning("A PII worker failed on texts %d-%d (%s: %s); scrubbing "
                                   "them in the main process", start, end - 1,
                                   type(exc).__name__, exc)
                    results += self.scrubber.scrub(texts[start:end], languages[start:end])
        return results


def _submit(pool: concurrent.futures.ProcessPoolExecutor, *args: Any) -> concurrent.futures.Future:
    """``pool.submit(_scrub_chunk, *args)``, or a future holding the error of a pool that
    broke while chunks were still being submitted."""
    try:
        return pool.submit(_scrub_chunk, *args)
    except BrokenProcessPool as exc:
        failed: concurrent.futures.Future = concurrent.futures.Future()
        failed.set_exception(exc)
        return failed


def _scrub_chunk(config_json: str, texts: list[str], languages: list[str]) -> list[ScrubResult]:
    return _cached_scrubber(config_json).scrub(texts, languages)
