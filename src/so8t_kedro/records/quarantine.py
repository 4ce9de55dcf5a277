"""The quarantine table: the records no stage could use, with the reason, in one table.

Each stage (reading JSONL, cleaning, deduplication) quarantines what it cannot use
(:data:`~.schema.QUARANTINE_COLUMNS`, reasons :data:`~.schema.QUARANTINE_REASONS`);
:func:`join_quarantines` joins them, and scrubs the raw snippets they keep.
"""

from __future__ import annotations

import pandas as pd

from so8t_kedro.records.pii import ScrubberPool
from so8t_kedro.records.schema import QUARANTINE_COLUMNS
from so8t_kedro.records.text import detect_language, normalise_text


def join_quarantines(quarantines: list[pd.DataFrame], scrubber: ScrubberPool | None) -> pd.DataFrame:
    """Join the stage quarantines into one table sorted by file and line.

    With a ``scrubber``, the ``raw`` snippets are normalised and scrubbed too, so that the
    quarantine file does not keep what the clean records lose (a snippet the engine fails
    on is emptied).
    """
    frames = [q for q in quarantines if len(q)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in QUARANTINE_COLUMNS})
    quarantine = (
        pd.concat(frames, ignore_index=True)[QUARANTINE_COLUMNS]
        .sort_values(["file", "line"], kind="stable")
        .reset_index(drop=True)
    )
    if scrubber is not None:
        raws = [normalise_text(raw or "") for raw in quarantine["raw"].tolist()]
        results = scrubber.scrub(raws, [detect_language(raw) for raw in raws])
        # A snippet the engine fails on is dropped, never kept unscrubbed.
        quarantine["raw"] = [r.text if r.error is None else "" for r in results]
    return quarantine
