"""The serving configuration: the reply policy (``conf/<env>/parameters_serve*.yml``, key
``serve``) and the API key (environment variable :data:`API_KEY_ENV`, else
``think_api.api_key`` in ``conf/local/credentials.yml``), read with Kedro's config loader
so that ``conf/local`` and ``--env`` override ``conf/base`` as for a pipeline run."""

from __future__ import annotations

import os
from pathlib import Path

from so8t_kedro.serve.policy import ReplyPolicy

API_KEY_ENV = "SO8T_THINK_API_KEY"
CREDENTIALS_KEY = "think_api"
# Only the serving files: the PII parameters alone take OmegaConf over a second to read,
# paid by every CLI call. A conf/local override of `serve` belongs in such a file too.
SERVE_PARAMETER_PATTERNS = ["parameters_serve*", "parameters_serve*/**", "**/parameters_serve*"]


def load_serve_conf(conf_source: str | os.PathLike = "conf",
                    env: str | None = None) -> tuple[ReplyPolicy, str | None]:
    """``(reply policy, API key or None)`` from the project's conf folder."""
    from kedro.config import MissingConfigException, OmegaConfigLoader

    if not Path(conf_source, "base").is_dir():
        raise FileNotFoundError(f"no conf/base under {conf_source!r}: pass --conf-source")
    loader = OmegaConfigLoader(str(conf_source), base_env="base", default_run_env="local",
                               env=env,
                               config_patterns={"parameters": SERVE_PARAMETER_PATTERNS},
                               merge_strategy={"parameters": "soft"})  # as in settings.py
    params = loader["parameters"].get("serve")
    if not params:
        raise ValueError(f"no 'serve' parameters under {conf_source!r} "
                         "(conf/base/parameters_serve.yml)")
    api_key = os.environ.get(API_KEY_ENV)
    if not api_key:
        try:
            credentials = loader["credentials"]
        except MissingConfigException:
            credentials = {}
        api_key = (credentials.get(CREDENTIALS_KEY) or {}).get("api_key")
    return ReplyPolicy.from_params(params), api_key or None
