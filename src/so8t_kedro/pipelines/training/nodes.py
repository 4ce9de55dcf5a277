"""Nodes of the `training` pipeline: the base model, the optional Optuna search, the SO8T
QLoRA training run, their plots.

The loop itself is ``so8t_kedro.training.loop`` and the search ``so8t_kedro.training.hpo``;
these nodes connect them to the catalog.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from accelerate import PartialState
from accelerate.utils import gather_object
from matplotlib.figure import Figure
from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

from so8t_kedro.decision.reference_classifier import cross_fitted_scores
from so8t_kedro.models.bundles import AdapterBundle, BaseModelBundle
from so8t_kedro.models.embedded import embedded_base_model
from so8t_kedro.models.selection import chosen_base_dir, training_params_for
from so8t_kedro.think import request_from_prompt
from so8t_kedro.tracking.steps import step_trackers
from so8t_kedro.training.checkpoint import TrainingInterrupted
from so8t_kedro.training.hpo import (
    OBJECTIVE_TERMS,
    apply_overrides,
    best_parameters,
    run_study,
    study_storage,
    trials_table,
)
from so8t_kedro.training.loop import LOSS_TERMS, train_so8t, trainable_state
from so8t_kedro.training.pretrain import pretrain_causal_lm

logger = logging.getLogger(__name__)


def build_embedded_base_model(thinking_sft_dataset: pd.DataFrame,
                              params: dict[str, Any]) -> BaseModelBundle:
    """The embedded default: a tokenizer trained on the train split's SFT texts and a tiny
    Phi-3 pre-trained briefly on the train split's raw requests (never their labels or the
    /think answers), so that it is a base model that knows some language.

    Deterministic for the same corpus and ``params`` (``params:base_model.embedded``).
    """
    params = dict(params)
    pretrain = params.pop("pretrain")
    train = thinking_sft_dataset[thinking_sft_dataset["split"] == "train"]
    model, tokenizer = embedded_base_model(train["text"].tolist(), params)
    pretrain_causal_lm(model, tokenizer, [request_from_prompt(p) for p in train["prompt"]],
                       seed=params["seed"], **pretrain)
    logger.info("Embedded base model: %d parameters, vocabulary %d",
                sum(p.numel() for p in model.parameters()), len(tokenizer))
    return BaseModelBundle(model, tokenizer)


def attach_reference_scores(thinking_sft_dataset: pd.DataFrame, train_records: pd.DataFrame,
                            reference_params: dict[str, Any],
                            distillation_params: dict[str, Any]) -> pd.DataFrame:
    """The SFT samples, each train row with ``reference_scores``: the reference classifier's
    four logits for its request, cross-fitted over ``distillation_params["folds"]`` folds of
    the train split (:func:`~so8t_kedro.decision.reference_classifier.cross_fitted_scores`),
    the soft target of the loop's distillation term. Other rows get None.

    ``reference_params`` is ``params:evaluation.reference_classifier``: the teacher is the
    reference the evaluation shows beside the model, fitted on the other folds.
    """
    scores = cross_fitted_scores(train_records["text"].tolist(), train_records["label"].tolist(),
                                 reference_params, int(distillation_params["folds"]))
    by_id = dict(zip(train_records["id"], scores.tolist(), strict=True))
    samples = thinking_sft_dataset.copy()
    train = samples["split"] == "train"
    missing = sorted(set(samples.loc[train, "id"]) - set(by_id))
    if missing:
        raise ValueError(f"thinking_sft_dataset: {len(missing)} train sample(s) have no request "
                         f"in train_records (ids {missing[:5]}): the two come from different "
                         "data_processing runs; run data_processing and thinking_sft together")
    samples["reference_scores"] = [by_id[i] if is_train else None
                                   for i, is_train in zip(samples["id"], train, strict=True)]
    logger.info("Reference classifier cross-fitted over %d folds: scores of %d train samples",
                int(distillation_params["folds"]), int(train.sum()))
    return samples


def resolve_training_base(embedded_base_model_dir: Path, base_model_params: dict[str, Any],
                          training_params: dict[str, Any]) -> dict[str, Any]:
    """The base to train (``base_model.path`` when set, else the embedded default) and
    ``params:training`` for that base (:mod:`so8t_kedro.models.selection`), as
    ``base_model_dir`` and ``training_params``: what the search and the train node train.
    Each node resolves it from its own parameters, so that a ``--params`` override reaches
    a node run alone."""
    return {"base_model_dir": chosen_base_dir(base_model_params, embedded_base_model_dir),
            "training_params": training_params_for(base_model_params, training_params)}


def tune_hyperparameters(
    embedded_base_model_dir: Path,
    training_samples: pd.DataFrame,
    base_model_params: dict[str, Any],
    training_params: dict[str, Any],
    hpo_params: dict[str, Any],
    study_storage_url: str,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Run (or continue) the Optuna study when ``hpo.enabled``; else do nothing.

    Each trial trains the base of :func:`resolve_training_base` with the training
    parameters the search varies.

    Returns the best complete trial's parameters (the train node's overrides; ``{}`` when
    the search is off or no trial completed) and the study's trials table.
    """
    if not hpo_params["enabled"]:
        logger.info("Hyperparameter search is off (hpo.enabled: false); training uses "
                    "parameters_training.yml as it is. Run it with: kedro run "
                    "--pipelines=training --tags=hpo --params=hpo.enabled=true")
        return {}, pd.DataFrame(columns=["number", "value", "state", *OBJECTIVE_TERMS])
    base = resolve_training_base(embedded_base_model_dir, base_model_params, training_params)
    study = run_study(base["base_model_dir"], training_samples, base["training_params"],
                      hpo_params, study_storage(study_storage_url, hpo_params))
    best = best_parameters(study)
    logger.info("Study %s: best parameters %s", study.study_name, best or "none (no trial "
                "completed)")
    return best, trials_table(study)


def plot_hpo_study(hpo_trials: pd.DataFrame, hpo_params: dict[str, Any],
                   study_storage_url: str) -> tuple[Figure, Figure]:
    """Optuna's own optimisation-history and parameter-importance plots of the study."""
    if hpo_trials.empty:
        return (_message_figure("optimisation history: no study (hpo.enabled is false)"),
                _message_figure("parameter importances: no study (hpo.enabled is false)"))
    study = optuna.load_study(study_name=str(hpo_params["study_name"]),
                              storage=study_storage_url)
    with warnings.catch_warnings():
        # Optuna marks its matplotlib plots experimental; the plots are what we want.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        history = _fitted(plot_optimization_history(study).figure)
        complete = int(hpo_trials["state"].eq("COMPLETE").sum())
        if complete < 2:  # importances need at least two complete trials
            return history, _message_figure(
                f"parameter importances: {complete} complete trial(s), need at least 2")
        return history, _fitted(plot_param_importances(study).figure)


def _fitted(figure: Figure) -> Figure:
    """Optuna's figure with room for its axis labels (it leaves long names cut off)."""
    figure.set_layout_engine("constrained")
    return figure


def _message_figure(message: str) -> Figure:
    figure = Figure(figsize=(6, 2), layout="constrained")
    axes = figure.subplots()
    axes.axis("off")
    axes.text(0.5, 0.5, message, ha="center", va="center")
    return figure


def train_so8t_adapter(
    embedded_base_model_dir: Path,
    training_samples: pd.DataFrame,
    base_model_params: dict[str, Any],
    training_params: dict[str, Any],
    hpo_best_params: dict[str, Any],
) -> tuple[AdapterBundle, pd.DataFrame, dict[str, Any]]:
    """Train LoRA + SO8T gates on ``base_model.path`` (or the embedded default, with
    ``base_model.embedded_training`` over ``params:training``), with the hyperparameter
    search's best parameters (if any) overriding both.

    Returns the adapter (+ gates, + tokenizer), the per-step loss history and a summary
    with the validation LM loss before and after training.
    """
    base = resolve_training_base(embedded_base_model_dir, base_model_params, training_params)
    base_dir = base["base_model_dir"]
    if hpo_best_params:
        logger.info("Training with the hyperparameter search's best parameters: %s",
                    hpo_best_params)
    params = apply_overrides(base["training_params"], hpo_best_params)
    try:
        result = train_so8t(base_dir, training_samples, params,
                            checkpoint_dir=params["checkpoint"]["dir"], trackers=step_trackers())
    except TrainingInterrupted as stop:
        # Stopped by a signal after an emergency checkpoint (the loop printed how to resume):
        # leave the way the signal asks, with 128 + its number, not as a crashed node.
        # Under `accelerate launch` every process says so, each with its rank.
        process = PartialState()
        logger.warning("Process %d of %d: %s", process.process_index, process.num_processes,
                       stop)
        raise SystemExit(stop.exit_code) from None
    digests = process_weight_digests(result.model)
    if len(set(digests)) > 1:
        raise RuntimeError(f"training: the {len(digests)} processes of this accelerate launch "
                           f"ended with different trainable weights (SHA-256 {digests}); the "
                           "adapter of any one of them is not the run's")
    summary = {**result.summary, "hpo_overrides": dict(hpo_best_params),
               "trainable_weights_sha256": digests}
    return AdapterBundle(result.model, result.tokenizer), result.history, summary


def process_weight_digests(model) -> list[str]:
    """The SHA-256 of the trainable weights (LoRA, gates, modules trained in full) in each
    process of the run, in rank order: one entry in a plain run, N under ``accelerate launch``
    (DDP keeps them identical; this checks that it did)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(trainable_state(model).items()):
        digest.update(name.encode() + tensor.float().numpy().tobytes())
    return gather_object([digest.hexdigest()])


def plot_learning_curve(training_history: pd.DataFrame) -> Figure:
    """Every loss term per optimiser step, and the learning rate.

    A run resumed from a finished session has no steps: the figure then says so.
    """
    figure = Figure(figsize=(10, 4), layout="constrained")
    losses, rate = figure.subplots(1, 2)
    losses.set(xlabel="optimiser step", ylabel="loss", title="training losses")
    rate.set(xlabel="optimiser step", ylabel="learning rate", title="schedule")
    if training_history.empty:
        losses.set_title("training losses: no optimiser steps in this run")
        return figure
    for term in LOSS_TERMS:
        if training_history[term].abs().sum() > 0:
            losses.plot(training_history["step"], training_history[term], label=term)
    losses.set_yscale("log")
    losses.legend()
    rate.plot(training_history["step"], training_history["lr"])
    return figure
