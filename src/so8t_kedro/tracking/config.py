"""``params:tracking`` (conf/base/parameters_tracking.yml), validated when a run starts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, TypeAdapter


class TrackingConfig(BaseModel):
    """What :class:`~so8t_kedro.tracking.hooks.MlflowTrackingHooks` logs; unknown keys are
    errors. The meaning of each key is documented in parameters_tracking.yml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool
    metrics: tuple[str, ...]
    tags: dict[str, tuple[str, ...]]
    reports: dict[str, str]
    hpo_trials: str
    models: dict[str, str]

    @classmethod
    def from_params(cls, params: dict) -> TrackingConfig | None:
        """The validated config, or None when ``tracking.enabled`` is false: a machine's
        conf/local can then turn tracking off with that one key."""
        try:
            block = params["tracking"]
            if not TypeAdapter(bool).validate_python(block["enabled"]):  # "false" too
                return None
            return cls.model_validate(block)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"params:tracking (conf/base/parameters_tracking.yml) is invalid: {error!r}"
            ) from error
