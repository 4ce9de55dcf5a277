"""Bayesian hyperparameter search over the SO8T training run, with Optuna.

Each trial trains the real loop (:func:`~so8t_kedro.training.loop.train_so8t`) for a
budget of optimiser steps with the trial's parameters, and every ``eval_every_steps``
scores the validation split with the evaluation pipeline's classifier
(:class:`~so8t_kedro.decision.classifier.FourClassScorer`, :func:`~so8t_kedro.decision.scoring.score_requests`)
and metrics (:mod:`so8t_kedro.decision.metrics`). The objective is reported to the pruner at each
evaluation, so unpromising trials stop early:

    objective = 0.5·recall(REFUSE) + 0.2·recall(ESCALATION) + 0.2·macro-F1 + 0.1·(1 − ECE)

(weights are parameters). The study lives in an RDB storage (a SQLite file by default,
any SQLAlchemy URL through credentials) and is created with ``load_if_exists``: a second
run, or a second machine, continues the same study. Trials of a killed process are failed
by Optuna's heartbeat and retried with the same parameters, resuming from the killed
trial's last checkpoint. Framework-free (no kedro): the ``training`` pipeline's
``tune_hyperparameters`` node calls :func:`run_study`.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sqlalchemy.exc import IntegrityError, OperationalError

from so8t_kedro.decision.classifier import FourClassScorer
from so8t_kedro.decision.metrics import classification_metrics, expected_calibration_error, softmax
from so8t_kedro.decision.scoring import score_requests
from so8t_kedro.labels import LABEL_TO_ID, LABELS
from so8t_kedro.think import request_from_prompt
from so8t_kedro.training.checkpoint import CheckpointNotFoundError, latest
from so8t_kedro.training.loop import StepReport, train_so8t

logger = logging.getLogger(__name__)

OBJECTIVE_TERMS = ("refuse_recall", "escalation_recall", "macro_f1", "one_minus_ece")
# The seeds' names for the searched values, as paths into ``params:training``.
PARAMETER_PATHS = {
    "safety_weight": "loss_weights.safety",
    "cmd_weight": "loss_weights.cmd",
    "temperature": "safety_temperature",
}
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


# --------------------------------------------------------------------------- objective


def objective_terms(probabilities: np.ndarray, label_ids: Sequence[int],
                    ece_bins: int) -> dict[str, float]:
    """The objective's four terms for four-class ``probabilities`` [N, 4] and true ids."""
    predicted = np.asarray(LABELS)[np.asarray(probabilities).argmax(axis=1)]
    true = np.asarray(LABELS)[np.asarray(label_ids)]
    scores = classification_metrics(true, predicted)
    return {
        "refuse_recall": scores["per_class"]["REFUSE"]["recall"],
        "escalation_recall": scores["per_class"]["ESCALATION"]["recall"],
        "macro_f1": scores["macro_f1"],
        "one_minus_ece": 1.0 - expected_calibration_error(probabilities, label_ids, ece_bins),
    }


def objective_value(terms: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """Σ weight · term over :data:`OBJECTIVE_TERMS` (a missing weight is an error)."""
    unknown = set(weights) - set(OBJECTIVE_TERMS)
    if unknown:
        raise ValueError(f"hpo.objective_weights: unknown terms {sorted(unknown)}; "
                         f"known: {list(OBJECTIVE_TERMS)}")
    return float(sum(float(weights[name]) * terms[name] for name in OBJECTIVE_TERMS))


# --------------------------------------------------------------------------- parameters


def suggest_parameters(trial: optuna.Trial, search_space: Mapping[str, Mapping[str, Any]]
                       ) -> dict[str, Any]:
    """One value per search-space entry: ``{low, high[, log]}`` (float), ``{low, high,
    type: int[, step]}`` or ``{choices: [...]}``."""
    values = {}
    for name, spec in search_space.items():
        if "choices" in spec:
            values[name] = trial.suggest_categorical(name, list(spec["choices"]))
        elif spec.get("type", "float") == "int":
            values[name] = trial.suggest_int(name, int(spec["low"]), int(spec["high"]),
                                             step=int(spec.get("step", 1)),
                                             log=bool(spec.get("log", False)))
        else:
            values[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]),
                                               log=bool(spec.get("log", False)))
    return values


def apply_overrides(training_params: Mapping[str, Any], overrides: Mapping[str, Any]
                    ) -> dict[str, Any]:
    """A copy of ``params:training`` with ``overrides`` (best or trial parameters) applied.

    ``pet_lambda`` scales the PET schedule so that its largest phase equals the value (the
    phases keep their ratios); ``safety_weight``, ``cmd_weight`` and ``temperature`` are
    the seeds' names of :data:`PARAMETER_PATHS`; any other name is a dotted path into the
    training parameters (``learning_rate``, ``lora.r``), which must exist.
    """
    params = copy.deepcopy(dict(training_params))
    for name, value in overrides.items():
        if name == "pet_lambda":
            phases = [float(v) for v in params["pet_schedule"]["values"]]
            params["pet_schedule"]["values"] = [v * float(value) / max(phases) for v in phases]
            continue
        *parents, leaf = PARAMETER_PATHS.get(name, name).split(".")
        node = params
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            raise KeyError(f"hyperparameter {name!r}: params:training has no "
                           f"{PARAMETER_PATHS.get(name, name)!r}")
        node[leaf] = value
    return params


# --------------------------------------------------------------------------- study


_STORAGE_ATTEMPTS = 4


def study_storage(url: str, hpo_params: Mapping[str, Any]) -> RDBStorage:
    """The study's RDB storage, with heartbeats: a trial whose process died is marked
    failed after ``grace_period_seconds`` and retried once with the same parameters."""
    heartbeat = hpo_params["heartbeat"]
    # Several workers on one SQLite file take turns at its write lock: they wait for it
    # (SQLite's busy timeout) instead of failing with "database is locked".
    busy_timeout = float(hpo_params["sqlite_busy_timeout_seconds"])
    engine_kwargs = ({"connect_args": {"timeout": busy_timeout}} if url.startswith("sqlite")
                     else None)
    with warnings.catch_warnings():
        # Heartbeats have been "experimental" since Optuna 2.8; they are the documented way
        # to recover trials of a dead process.
        warnings.simplefilter("ignore", ExperimentalWarning)
        def storage() -> RDBStorage:
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=int(heartbeat["interval_seconds"]),
                grace_period=int(heartbeat["grace_period_seconds"]),
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                    max_retry=int(heartbeat["max_retry"]), inherit_intermediate_values=True),
            )

        # Workers that start together on a new database both create its tables and stamp
        # its schema version: the slower one's CREATE TABLE or version row fails (or finds
        # the file locked), and on a later try the schema is there.
        for attempt in range(_STORAGE_ATTEMPTS):
            try:
                return storage()
            except (OperationalError, IntegrityError):
                if attempt == _STORAGE_ATTEMPTS - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))


def create_study(storage: RDBStorage | str, hpo_params: Mapping[str, Any]) -> optuna.Study:
    """Create or load (``load_if_exists``) the study: TPE with a seed, median pruning."""
    pruner = hpo_params["pruner"]
    return optuna.create_study(
        study_name=str(hpo_params["study_name"]),
        storage=storage,
        # Workers on one study with one seed would draw the same parameters, trial for
        # trial: each mixes its process id into the seed. constant_liar: TPE treats the
        # other workers' running trials as bad results, so it does not sample beside them.
        sampler=optuna.samplers.TPESampler(
            seed=int(np.random.SeedSequence([int(hpo_params["seed"]), os.getpid()])
                     .generate_state(1)[0]),
            n_startup_trials=int(hpo_params["n_startup_trials"]), constant_liar=True),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=int(pruner["n_startup_trials"]),
                                           n_warmup_steps=int(pruner["n_warmup_steps"])),
        direction="maximize",
        load_if_exists=True,
    )


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))


class ValidationObjective:
    """Scores the in-training model on the validation split and reports to the trial."""

    def __init__(self, samples: pd.DataFrame, hpo_params: Mapping[str, Any], *,
                 temperature: float, max_probe_tokens: int):
        val = samples[samples["split"] == "val"]
        if val.empty:
            raise ValueError("hpo: the thinking_sft dataset has no split == 'val' rows")
        self.texts = [request_from_prompt(p) for p in val["prompt"]]
        self.languages = val["language"].tolist()
        self.label_ids = val["label"].map(LABEL_TO_ID).to_numpy()
        self.fmt = str(samples["format"].iloc[0])
        self.weights = hpo_params["objective_weights"]
        self.ece_bins = int(hpo_params["ece_bins"])
        self.eval_every = int(hpo_params["eval_every_steps"])
        self.batch_size = int(hpo_params["scoring_batch_size"])
        self.temperature = temperature
        self.max_probe_tokens = max_probe_tokens
        self.last: tuple[float, dict[str, float]] | None = None

    def evaluate(self, model, tokenizer) -> tuple[float, dict[str, float]]:
        """(objective, terms) of ``model`` on the validation split, in eval mode."""
        scorer = FourClassScorer(tokenizer, fmt=self.fmt, max_probe_tokens=self.max_probe_tokens)
        was_training = model.training
        model.eval()
        try:
            scores, _ = score_requests(model, scorer, self.texts, self.languages,
                                       batch_size=self.batch_size)
        finally:
            model.train(was_training)
        terms = objective_terms(softmax(scores, self.temperature), self.label_ids,
                                self.ece_bins)
        return objective_value(terms, self.weights), terms

    def on_step(self, trial: optuna.Trial, total_steps: int, report: StepReport) -> None:
        if report.step % self.eval_every and report.step < total_steps:
            return
        value, terms = self.evaluate(report.model, report.tokenizer)
        self.last = value, terms
        trial.report(value, report.step)
        logger.info("Trial %d step %d: objective %.4f %s", trial.number, report.step, value,
                    {k: round(v, 4) for k, v in terms.items()})
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {report.step} (objective {value:.4f})")


def trial_checkpoint_dir(root: str | Path, trial: optuna.Trial) -> Path:
    """``<root>/hpo/<study>/trial_<n>``; a retried trial reuses its original's folder."""
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        original = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
    number = trial.number if original is None else original
    return Path(root) / "hpo" / trial.study.study_name / f"trial_{number:04d}"


def run_study(base_model_dir: str | Path, samples: pd.DataFrame,
              training_params: Mapping[str, Any], hpo_params: Mapping[str, Any],
              storage: RDBStorage | str) -> optuna.Study:
    """Run trials until the study holds ``n_trials`` finished (complete or pruned) ones.

    Returns the study. Trials already in the storage count: a re-run after a kill goes on
    from where the study stands.
    """
    study = create_study(storage, hpo_params)
    target = int(hpo_params["n_trials"])
    steps = int(hpo_params["steps_per_trial"])

    def objective(trial: optuna.Trial) -> float:
        overrides = suggest_parameters(trial, hpo_params["search_space"])
        params = apply_overrides(training_params, overrides)
        checkpoint_dir = trial_checkpoint_dir(params["checkpoint"]["dir"], trial)
        resume_from = _latest_checkpoint(checkpoint_dir)  # a retried trial's last state
        params.update(max_steps=steps, resume=resume_from and str(resume_from))
        params["progress"]["show_progress_bar"] = False  # params is the trial's own copy
        # The probabilities are read at the trial's four-class temperature, the probe as
        # long as training's.
        tracker = ValidationObjective(
            samples, hpo_params, temperature=float(params["safety_temperature"]),
            max_probe_tokens=int(params["max_seq_length"]))
        trial.set_user_attr("checkpoint_dir", str(checkpoint_dir))
        trial.set_user_attr("resumed_from", resume_from and str(resume_from))
        result = train_so8t(base_model_dir, samples, params, checkpoint_dir=checkpoint_dir,
                            on_step=lambda report: tracker.on_step(trial, steps, report))
        # A resumed trial that had already finished its steps is scored once here.
        value, terms = tracker.last or tracker.evaluate(result.model, result.tokenizer)
        trial.set_user_attr("terms", terms)
        return value

    timeout = hpo_params["timeout_seconds"]
    deadline = time.monotonic() + float(timeout) if timeout else math.inf
    poll = float(hpo_params["heartbeat"]["interval_seconds"])
    while time.monotonic() < deadline:
        finished, running = _trial_counts(study)
        if finished + running >= target:
            if not running:
                break
            # Other workers (or a dead one, until its heartbeat goes stale and its trial is
            # retried) hold the last trials: wait for them rather than overshoot n_trials.
            time.sleep(poll)
            continue
        logger.info("Study %s: %d finished and %d running trials, running up to %d more",
                    study.study_name, finished, running, target - finished - running)
        study.optimize(objective, n_trials=target - finished - running,
                       timeout=None if math.isinf(deadline) else deadline - time.monotonic(),
                       callbacks=[_stop_at(target)])
    logger.info("Study %s holds %d finished trials (n_trials %d)", study.study_name,
                finished_trials(study), target)
    return study


def _trial_counts(study: optuna.Study) -> tuple[int, int]:
    """(finished, running) trials of the study, after failing the trials of dead workers
    (stale heartbeats), whose retries then wait in the queue."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False, states=(*FINISHED_STATES, TrialState.RUNNING))
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return len(trials) - running, running


def _stop_at(target: int):
    """A callback that stops this worker once finished + running trials (any worker's)
    reach ``target``: Optuna's MaxTrialsCallback counts finished ones only, so two workers
    would each start one more trial near the end."""

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if sum(_trial_counts(study)) >= target:
            study.stop()

    return callback


def _latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest checkpoint in a trial's folder (a retried trial has some), else None."""
    try:
        return latest(checkpoint_dir)
    except CheckpointNotFoundError:
        return None


def best_parameters(study: optuna.Study) -> dict[str, Any]:
    """The best complete trial's parameters ({} when no trial completed)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return {}  # Optuna's best_params raises then
    return study.best_params


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """Optuna's trials table (number, value, state, params_*, durations), plus the
    objective's terms of each finished trial and its checkpoint folder."""
    table = study.trials_dataframe(attrs=("number", "value", "state", "params",
                                          "datetime_start", "datetime_complete", "duration"))
    trials = study.get_trials(deepcopy=False)  # in number order, as the table's rows
    for term in OBJECTIVE_TERMS:
        table[term] = [t.user_attrs.get("terms", {}).get(term) for t in trials]
    table["last_step"] = [t.last_step for t in trials]
    table["checkpoint_dir"] = [t.user_attrs.get("checkpoint_dir") for t in trials]
    for column in ("datetime_start", "datetime_complete", "duration"):
        table[column] = table[column].astype(str)
    return table
