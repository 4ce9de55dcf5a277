"""The project's configuration as a run reads it; a project copy's input data."""

from functools import cache
from pathlib import Path

import pandas as pd
from kedro.config import OmegaConfigLoader

CONF = Path(__file__).resolve().parents[2] / "conf"
SEED_DATA = CONF.parent / "data/01_raw/so8t_seed_dataset.jsonl"
SFT_DATASET = "data/05_model_input/thinking_sft/thinking_sft_dataset.jsonl"
# The save version of the SFT samples a test writes (before any run's).
SFT_VERSION = "2026-01-01T00.00.00.000Z"


@cache
def project_parameters() -> dict:
    """The project's parameters (every parameters*.yml of conf/base and conf/local merged,
    interpolations resolved)."""
    return OmegaConfigLoader(conf_source=str(CONF), base_env="base",
                             default_run_env="local")["parameters"]


def write_sft_samples(project: Path, samples: pd.DataFrame) -> None:
    """The SFT samples as the catalog's thinking_sft_dataset (one version)."""
    path = project / SFT_DATASET / SFT_VERSION / "thinking_sft_dataset.jsonl"
    path.parent.mkdir(parents=True)
    samples.to_json(path, orient="records", lines=True, force_ascii=False)
