"""Record tables as the pipelines load and hand them on: columns restored on tables that
were saved empty, and the record contract's dtypes (:mod:`.schema` names the columns)."""

from __future__ import annotations

import pandas as pd

from so8t_kedro.records.schema import RECORD_COLUMNS


def ensure_columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``frame`` with any missing ``columns`` added (empty JSONL loads with no columns)."""
    missing = [c for c in columns if c not in frame.columns]
    return frame.assign(**{c: pd.Series(dtype=object) for c in missing}) if missing else frame


def with_contract_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """:data:`RECORD_COLUMNS` with pandas' string dtype for text columns, int64 label ids."""
    dtypes = {c: "str" for c in RECORD_COLUMNS if c != "label_id"} | {"label_id": "int64"}
    return frame[RECORD_COLUMNS].astype(dtypes).reset_index(drop=True)
