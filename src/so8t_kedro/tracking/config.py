"""``params:tracking`` (conf/base/parameters_tracking.yml), validated when a run starts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class TrackedModel(BaseModel):
    """A model folder's registered name and kind (what its model card describes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    registered_name: str
    kind: Literal["adapter", "baked"]


class TrackingConfig(BaseModel):
    """What :class:`~so8t_kedro.tracking.hooks.MlflowTrackingHooks` logs; unknown keys are
    errors. The meaning of each key is documented in parameters_tracking.yml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool
    metrics: tuple[str, ...]
    tags: dict[str, tuple[str, ...]]
    reports: dict[str, str]
    hpo_trials: str
    training_data: str
    models: dict[str, TrackedModel]
    evaluation: str

    @classmethod
    def from_params(cls, params: dict) -> TrackingConfig:
        try:
            return cls.model_validate(params["tracking"])
        except (KeyError, ValueError) as error:
            raise ValueError(
                f"params:tracking (conf/base/parameters_tracking.yml) is invalid: {error}"
            ) from error
