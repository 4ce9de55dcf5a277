"""Project settings; see https://docs.kedro.org/en/stable/configure/configuration_basics/."""

from kedro.config import OmegaConfigLoader

from so8t_kedro.hooks import (
    CompletionNotificationHooks,
    LaunchedProcessHooks,
    NodeFailureHooks,
    ParameterValidationHooks,
    RunSummaryHooks,
)
from so8t_kedro.logging_filters import silence_benign_noise
from so8t_kedro.tracking.cards import ModelCardHooks
from so8t_kedro.tracking.hooks import MlflowTrackingHooks

# Here, before Kedro builds its config loader, which raises the first benign warning.
silence_benign_noise()

HOOKS = (ParameterValidationHooks(), LaunchedProcessHooks(), RunSummaryHooks(),
         NodeFailureHooks(), CompletionNotificationHooks(), MlflowTrackingHooks(), ModelCardHooks())
# MlflowTrackingHooks runs kedro-mlflow's hook itself, only while tracking.enabled is true.
DISABLE_HOOKS_FOR_PLUGINS = ("kedro_mlflow",)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # `conf/webdataset` points every path at D:/webdataset: `kedro run --env=webdataset`.
    # Soft: an environment's parameters file or `--params=training.resume=latest` overrides
    # the keys it names and keeps the section's others (the default replaces whole top-level
    # sections once any environment file holds parameters).
    "merge_strategy": {"parameters": "soft"},
}
