"""Shared by the benchmarks that train the embedded default on the shipped seed data."""

from __future__ import annotations

import pandas as pd


def render_seed_samples(rows: pd.DataFrame) -> pd.DataFrame:
    """Seed records rendered as /think SFT samples by the thinking_sft pipeline's node; of
    every 8 rows, 6 go to train and 2 to val."""
    from so8t_kedro.labels import LABEL_TO_ID
    from so8t_kedro.pipelines.thinking_sft.nodes import render_thinking_sft_samples

    records = rows.assign(label_id=rows["label"].map(LABEL_TO_ID), source="seed",
                          split=["val" if i % 8 >= 6 else "train" for i in range(len(rows))])
    return render_thinking_sft_samples(records, {"format": "quadruple", "seed": 0})
