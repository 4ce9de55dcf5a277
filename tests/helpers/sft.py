"""The requests behind SFT samples, for pipelines that take both."""

from __future__ import annotations

import pandas as pd

from so8t_kedro.think import request_from_prompt


def train_records(sft_samples: pd.DataFrame) -> pd.DataFrame:
    """The train samples' requests as data_processing's ``train_records`` holds them (``id``,
    ``label``, ``text``)."""
    train = sft_samples[sft_samples["split"] == "train"]
    return pd.DataFrame({"id": train["id"], "label": train["label"],
                         "text": [request_from_prompt(p) for p in train["prompt"]]})
