"""MLflow tracking of Kedro runs: kedro-mlflow, switched by ``tracking.enabled``, and more.

kedro-mlflow (checked against 2.0.3, which supports Kedro >= 1.0, < 2) starts one MLflow
run per ``kedro run`` and ends it FINISHED, or FAILED when the pipeline fails. The
parameters of every node that runs are logged as kedro-mlflow names them (flattened, see
conf/base/mlflow.yml), by this hook, in batches rather than one store write each. It
registers its hook as a plugin; ``settings.py`` disables that registration and registers
:class:`MlflowTrackingHooks` instead, which runs kedro-mlflow's hook only while
``tracking.enabled`` is true: with tracking off no MLflow run starts and no store is
touched, so a run is exactly what it is without the plugin.

On top of kedro-mlflow, this hook logs (names from conf/base/parameters_tracking.yml):

- tags: the git commit (``mlflow.source.git.commit``, the UI's "Source" column) and
  whether the working tree had uncommitted changes, Kedro's save version, and the version
  of every versioned dataset the run loaded (``kedro.load_version.<dataset>``);
- metrics: the numeric leaves of the ``metrics`` entries when they are saved
  (``evaluation_metrics.baselines.reference_classifier.macro_f1`` ...), with each dict as a
  JSON artifact, and the ``tags`` leaves (the A/B verdict) as tags;
- artifacts: every matplotlib figure saved (PNG, under ``figures/``) and the ``reports``
  (HTML, under ``reports/``);
- HPO: each row of the Optuna trials table as a nested run of this run (its parameters,
  objective value and terms, and its state: COMPLETE -> FINISHED, PRUNED -> KILLED,
  FAIL -> FAILED);
- models: at the end of the run, each ``models`` folder the run saved is logged as
  artifacts and registered as a new version of its registered model, with the model card
  that :class:`~so8t_kedro.tracking.cards.ModelCardHooks` wrote into it as the version's
  description;
- a failed run: the error, as the ``error`` tag (kedro-mlflow marks it FAILED); a run the
  process leaves unfinished (a training stopped by SIGINT/SIGTERM exits with SystemExit,
  which Kedro's error hook does not see) is marked KILLED, not FINISHED.

The training loop logs each optimiser step itself (:mod:`so8t_kedro.tracking.steps`); the
hook waits for those writes before the run ends (finished, failed or interrupted).
"""

from __future__ import annotations

import atexit
import logging
import math
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from kedro.framework.hooks import hook_impl
from kedro.io import AbstractVersionedDataset, CatalogProtocol
from kedro.pipeline import Node, Pipeline

from so8t_kedro.launch import launch_rank
from so8t_kedro.reporting.model_card import CARD_FILE
from so8t_kedro.tracking.config import TrackingConfig
from so8t_kedro.tracking.steps import MAX_BATCH_METRICS, flush_step_trackers

if TYPE_CHECKING:
    from kedro.framework.context import KedroContext
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

SQLITE = "sqlite:///"
# kedro-mlflow's own patterns for its config files (mlflow_hook.py)
MLFLOW_CONFIG_PATTERNS = ["mlflow*", "mlflow*/**", "**/mlflow*"]
# Optuna trial state -> MLflow run status
TRIAL_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def mlflow_name(name: str) -> str:
    """``name`` with the characters MLflow refuses in a metric or tag name (a transcoded
    dataset's ``@``, a bracket) replaced by ``_``."""
    return re.sub(r"[^\w\-. /:]", "_", name)


def numeric_leaves(data: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """``{"<prefix>.<key>.<key>": value}`` for every int, float or bool leaf of ``data``
    (lists and text are left out), with keys made valid MLflow metric names."""
    leaves: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}"
        if isinstance(value, Mapping):
            leaves.update(numeric_leaves(value, name))
        elif isinstance(value, (int, float)):  # bool included: a rule passed is 1
            leaves[mlflow_name(name)] = float(value)
    return leaves


def text_leaf(data: Mapping[str, Any], dotted: str) -> str | None:
    """The value at ``a.b.c`` in nested dicts, as text; None when absent."""
    value: Any = data
    for key in dotted.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return str(value)


def project_sqlite_uri(uri: str, project_path: Path) -> str:
    """``sqlite:///<relative path>`` made absolute against the project folder.

    kedro-mlflow takes relative *paths* from the project folder, but passes URIs on as they
    are, and SQLite would take a relative one from the working directory: a run started
    from a sub-folder, or a session opened from a notebook or a test, would open another
    store.
    """
    path = uri.removeprefix(SQLITE)
    if uri.startswith(SQLITE) and not Path(path).is_absolute():
        return SQLITE + (project_path / path).as_posix()
    return uri


def declares_kedro_mlflow_dataset(conf_catalog: dict[str, Any]) -> bool:
    """Whether a catalog entry (or dataset factory) has a kedro-mlflow dataset type."""
    return any(isinstance(entry, Mapping) and "kedro_mlflow" in str(entry.get("type", ""))
               for entry in conf_catalog.values())


def git_state(project_path: Path) -> dict[str, str]:
    """The commit and whether tracked files have uncommitted changes; {} outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=project_path, capture_output=True,
                              text=True, check=True, timeout=30).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": commit, "git.dirty": str(dirty).lower()}


class MlflowTrackingHooks:
    """kedro-mlflow's hook behind ``tracking.enabled``, plus the logging described in the
    module docstring. One instance serves every run of a process (a notebook runs many)."""

    def __init__(self) -> None:
        self._config: TrackingConfig | None = None
        self._kedro_mlflow: Any = None  # kedro_mlflow's MlflowHook while tracking is on

    @property
    def _on(self) -> bool:
        return self._kedro_mlflow is not None

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        self._config = TrackingConfig.from_params(context.params)
        # Under `accelerate launch` the main process tracks the run; another would start a
        # second MLflow run for the same training.
        if self._config is None or launch_rank() != 0:
            self._kedro_mlflow = None
            return
        from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook
        from mlflow import MlflowClient

        # kedro-mlflow reads the "mlflow" config itself; set explicitly, the loader returns
        # this copy instead of reading the files again.
        context.config_loader.config_patterns.setdefault("mlflow", MLFLOW_CONFIG_PATTERNS)
        conf = context.config_loader["mlflow"]
        conf["server"]["mlflow_tracking_uri"] = project_sqlite_uri(
            conf["server"]["mlflow_tracking_uri"], Path(context.project_path))
        context.config_loader["mlflow"] = conf
        self._kedro_mlflow = MlflowHook()
        self._kedro_mlflow.after_context_created(context)
        server = context.mlflow.server  # set by kedro-mlflow
        self._client: MlflowClient = MlflowClient(server.mlflow_tracking_uri,
                                                  server.mlflow_registry_uri)
        self._project_path = Path(context.project_path)

    @hook_impl
    def after_catalog_created(self, catalog: CatalogProtocol, conf_catalog: dict,
                              conf_creds: dict, parameters: dict, save_version: str,
                              load_versions: dict) -> None:
        if not self._on:
            return
        # kedro-mlflow's hook here only names its own metric datasets after their entries,
        # and to find them it instantiates every dataset of the catalog (seconds of imports
        # per run): it runs only when the catalog declares one.
        if declares_kedro_mlflow_dataset(conf_catalog):
            self._kedro_mlflow.after_catalog_created(catalog, conf_catalog, conf_creds,
                                                     parameters, save_version, load_versions)
        self._catalog = catalog
        self._save_version = save_version

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline,
                            catalog: CatalogProtocol) -> None:
        if not self._on:
            return
        self._kedro_mlflow.before_pipeline_run(run_params, pipeline, catalog)
        self._run_id: str = self._kedro_mlflow.run_id
        # A run the process leaves without the pipeline ending (a training stopped by a
        # signal exits with SystemExit, which Kedro's error hook does not see) would be
        # ended FINISHED by MLflow's own exit handler; this one runs before it.
        atexit.register(self._end_interrupted, self._run_id)
        self._saved_models: dict[str, Path] = {}  # dataset -> folder saved by this run
        for key, value in {**git_state(self._project_path),
                           "kedro.save_version": self._save_version}.items():
            self._client.set_tag(self._run_id, key, value)

    @hook_impl
    def before_node_run(self, node: Node, catalog: CatalogProtocol, inputs: dict[str, Any],
                        is_async: bool) -> None:
        if not self._on:
            return
        params = {name: value for name, value in inputs.items()
                  if name.startswith("params:") or name == "parameters"}
        # kedro-mlflow makes the run active in the node's thread (the training loop's step
        # tracker logs to it) and would log each parameter in a store transaction of its
        # own (~1 s before the training node); it gets the other inputs, and the
        # parameters go in batches.
        self._kedro_mlflow.before_node_run(
            node, catalog, {name: value for name, value in inputs.items() if name not in params},
            is_async)
        self._log_node_params(params)

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, data: Any) -> None:
        if not self._on:
            return
        version = self._load_version(dataset_name)
        if version is not None:
            self._client.set_tag(self._run_id, mlflow_name(f"kedro.load_version.{dataset_name}"),
                                 version)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any) -> None:
        if not self._on:
            return
        from matplotlib.figure import Figure

        config, run_id = self._config, self._run_id
        if isinstance(data, Figure):
            self._client.log_figure(run_id, data, f"figures/{mlflow_name(dataset_name)}.png")
        if dataset_name in config.metrics:
            self._log_metrics_dict(dataset_name, data)
        if dataset_name in config.reports:
            self._client.log_text(run_id, data, f"reports/{config.reports[dataset_name]}")
        if dataset_name == config.hpo_trials:
            self._log_trials(data)
        if dataset_name in config.models:
            # the folder of the version just saved (HFDirectoryDataset loads as its path)
            self._saved_models[dataset_name] = Path(self._catalog.load(dataset_name))

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline,
                           catalog: CatalogProtocol) -> None:
        if not self._on:
            return
        for dataset_name, folder in self._saved_models.items():
            self._register(dataset_name, folder)
        flush_step_trackers()  # the training loop's steps still held
        self._kedro_mlflow.after_pipeline_run(run_params, pipeline, catalog)
        atexit.unregister(self._end_interrupted)

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any],
                          pipeline: Pipeline, catalog: CatalogProtocol) -> None:
        if not self._on:
            return
        # MLflow's tag values are limited to 8,000 characters; the start says what failed.
        self._client.set_tag(self._run_id, "error", f"{type(error).__name__}: {error}"[:8000])
        flush_step_trackers()  # the training loop's steps still held
        self._kedro_mlflow.on_pipeline_error(error, run_params, pipeline, catalog)
        atexit.unregister(self._end_interrupted)

    def _end_interrupted(self, run_id: str) -> None:
        """Mark ``run_id`` KILLED, the process leaving while it is in progress."""
        import mlflow

        flush_step_trackers()
        self._client.set_tag(run_id, "error", "interrupted: the process exited during the run")
        while mlflow.active_run() is not None:
            mlflow.end_run("KILLED")
        self._client.set_terminated(run_id, "KILLED")

    def _log_node_params(self, params: dict[str, Any]) -> None:
        """The node's parameter inputs named and flattened as kedro-mlflow does (mlflow.yml's
        ``tracking.params``), a batch per 100 (MLflow's limit); a value too long for a
        parameter goes through kedro-mlflow's ``long_params_strategy``."""
        from kedro_mlflow.framework.hooks.utils import _flatten_dict
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        kedro_mlflow = self._kedro_mlflow
        dict_params = kedro_mlflow.mlflow_config.tracking.params.dict_params
        params = {name.removeprefix("params:"): value for name, value in params.items()}
        if dict_params.flatten:
            params = _flatten_dict(params, recursive=dict_params.recursive, sep=dict_params.sep)
        batch = []
        for name, value in params.items():
            name = kedro_mlflow.sanitize_param_name(name)
            if len(str(value)) <= MAX_PARAM_VAL_LENGTH:
                batch.append(Param(name, str(value)))
            else:
                kedro_mlflow._log_param(name, value)
        for start in range(0, len(batch), MAX_PARAMS_TAGS_PER_BATCH):
            self._client.log_batch(self._run_id,
                                   params=batch[start:start + MAX_PARAMS_TAGS_PER_BATCH])

    def _load_version(self, dataset_name: str) -> str | None:
        dataset = self._catalog.get(dataset_name)
        if isinstance(dataset, AbstractVersionedDataset):
            return dataset.resolve_load_version()
        return None

    def _log_metrics_dict(self, dataset_name: str, data: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        self._client.log_dict(self._run_id, data, f"metrics/{dataset_name}.json")
        metrics = [Metric(key, value, 0, 0) for key, value in
                   numeric_leaves(data, dataset_name).items()]
        for start in range(0, len(metrics), MAX_BATCH_METRICS):
            self._client.log_batch(self._run_id,
                                   metrics=metrics[start:start + MAX_BATCH_METRICS])
        for dotted in self._config.tags.get(dataset_name, ()):
            value = text_leaf(data, dotted)
            if value is not None:
                self._client.set_tag(self._run_id, f"{dataset_name}.{dotted}", value)

    def _log_trials(self, trials: pd.DataFrame) -> None:
        """One nested run per Optuna trial, under this (the study's) run."""
        from mlflow.entities import Metric, Param

        experiment_id = self._client.get_run(self._run_id).info.experiment_id
        for trial in trials.to_dict(orient="records"):
            run = self._client.create_run(
                experiment_id, run_name=f"trial {trial['number']}",
                tags={"mlflow.parentRunId": self._run_id, "optuna.trial": str(trial["number"]),
                      "optuna.state": str(trial["state"])})
            params = [Param(key.removeprefix("params_"), str(value))
                      for key, value in trial.items() if key.startswith("params_")]
            metrics = [Metric("value" if key == "value" else f"objective.{key}",
                              float(value), 0, int(trial.get("last_step") or 0))
                       for key, value in trial.items()
                       if key not in ("number", "last_step") and not key.startswith("params_")
                       and isinstance(value, (int, float)) and not math.isnan(value)]
            self._client.log_batch(run.info.run_id, metrics=metrics, params=params)
            self._client.set_terminated(run.info.run_id,
                                        TRIAL_STATUS.get(str(trial["state"]), "KILLED"))

    def _register(self, dataset_name: str, folder: Path) -> None:
        """Log ``folder`` as artifacts and register it as a new model version."""
        from mlflow.exceptions import MlflowException

        name = self._config.models[dataset_name]
        self._client.log_artifacts(self._run_id, str(folder), f"models/{dataset_name}")
        card = (folder / CARD_FILE).read_text(encoding="utf-8")
        try:
            self._client.create_registered_model(name)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        source = f"{self._client.get_run(self._run_id).info.artifact_uri}/models/{dataset_name}"
        version = self._client.create_model_version(
            name, source, run_id=self._run_id, description=card,
            tags={"kedro.dataset": dataset_name, "folder": str(folder)})
        logger.info("Registered %s version %s from %s", name, version.version, folder)
