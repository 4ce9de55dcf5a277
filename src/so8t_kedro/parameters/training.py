"""``conf/base/parameters_training.yml``: ``base_model``, ``training`` and ``hpo``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from so8t_kedro.parameters._base import Strict
from so8t_kedro.so8t.config import SO8TConfig


class PretrainParameters(Strict):
    epochs: int
    learning_rate: float
    batch_size: int


class EmbeddedParameters(Strict):
    """``base_model.embedded`` (read by :func:`so8t_kedro.models.embedded.embedded_base_model`)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    max_position_embeddings: int
    seed: int
    # A list of tokens, or pii.placeholders' entity -> placeholder mapping.
    placeholder_tokens: dict[str, str] | list[str]
    pretrain: PretrainParameters


class BaseModelParameters(Strict):
    path: str | None
    embedded: EmbeddedParameters
    # Overrides of ``training`` for the embedded default: checked by merging them over
    # ``training`` and validating the result (see so8t_kedro.parameters.validate).
    embedded_training: dict[str, Any]


class LoraParameters(Strict):
    r: int
    alpha: int
    dropout: float
    target_modules: list[str]
    modules_to_save: list[str] | None


class So8tParameters(Strict):
    """``training.so8t``: ``enabled`` and the library's :class:`~so8t_kedro.so8t.config.
    SO8TConfig`, whose own checks (init, parametrization, layer indices ...) run here too,
    so a wrong value fails the run at its start, not when the gates are installed."""

    enabled: bool
    layer_indices: list[int] | None
    init: str
    init_scale: float
    parametrization: str

    @model_validator(mode="after")
    def _library_accepts(self) -> So8tParameters:
        SO8TConfig.from_dict(self.model_dump(exclude={"enabled"}))  # ValueError names the field
        return self


class LossWeights(Strict):
    cmd: float
    safety: float
    distill: float
    orthogonal_reg: float


class DistillationParameters(Strict):
    temperature: float
    folds: int


class PetSchedule(Strict):
    boundaries: list[float]
    values: list[float]


class CheckpointParameters(Strict):
    dir: str
    interval_seconds: float
    max_checkpoints: int


class ProgressThresholds(Strict):
    gpu_temperature_c: float
    memory_percent: float
    cpu_percent: float


class ProgressParameters(Strict):
    interval_seconds: float
    show_progress_bar: bool
    thresholds: ProgressThresholds


class TrainingParameters(Strict):
    """``training`` (read by :mod:`so8t_kedro.training.loop`)."""

    seed: int
    quantization: Literal["8bit", "4bit"] | None
    trust_remote_code: bool
    epochs: int
    batch_size: int
    gradient_accumulation_steps: int
    max_seq_length: int
    min_target_tokens: int
    length_group_batches: int
    learning_rate: float
    weight_decay: float
    warmup_ratio: float
    max_grad_norm: float
    max_consecutive_skipped_steps: int
    uniform_attention_start: bool
    gradient_checkpointing: bool
    mixed_precision: Literal["no", "fp16", "bf16"]
    bf16: bool
    lora: LoraParameters
    so8t: So8tParameters
    loss_weights: LossWeights
    safety_temperature: float
    distillation: DistillationParameters
    pet_schedule: PetSchedule
    checkpoint: CheckpointParameters
    progress: ProgressParameters
    resume: str | None
    resume_accept_changes: bool
    # Optional on purpose: a cap on the optimiser steps (the HPO trials set it); absent,
    # the epochs decide.
    max_steps: int | None = None


class PrunerParameters(Strict):
    n_startup_trials: int
    n_warmup_steps: int


class HeartbeatParameters(Strict):
    interval_seconds: float
    grace_period_seconds: float
    max_retry: int


class ObjectiveWeights(Strict):
    refuse_recall: float
    escalation_recall: float
    macro_f1: float
    one_minus_ece: float


class SearchSpec(Strict):
    """One search-space entry: ``{low, high[, log]}``, ``{low, high, type: int[, step]}``
    or ``{choices: [...]}`` (:func:`so8t_kedro.training.hpo.suggest_parameters`); the
    optional keys are optional in that grammar."""

    low: float | None = None
    high: float | None = None
    log: bool | None = None
    type: Literal["float", "int"] | None = None
    step: int | None = None
    choices: list[Any] | None = None


class HpoParameters(Strict):
    """``hpo`` (read by :mod:`so8t_kedro.training.hpo` and the training pipeline)."""

    enabled: bool
    study_name: str
    n_trials: int
    timeout_seconds: float | None
    seed: int
    n_startup_trials: int
    steps_per_trial: int
    eval_every_steps: int
    scoring_batch_size: int
    ece_bins: int
    pruner: PrunerParameters
    sqlite_busy_timeout_seconds: float
    heartbeat: HeartbeatParameters
    objective_weights: ObjectiveWeights
    search_space: dict[str, SearchSpec] = Field(min_length=1)


class TrainingFile(Strict):
    base_model: BaseModelParameters
    training: TrainingParameters
    hpo: HpoParameters
