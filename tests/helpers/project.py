"""The project's configuration as a run reads it."""

from functools import cache
from pathlib import Path

from kedro.config import OmegaConfigLoader

CONF = Path(__file__).resolve().parents[2] / "conf"


@cache
def project_parameters() -> dict:
    """The project's parameters (every parameters*.yml of conf/base and conf/local merged,
    interpolations resolved)."""
    return OmegaConfigLoader(conf_source=str(CONF), base_env="base",
                             default_run_env="local")["parameters"]
