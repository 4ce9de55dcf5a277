"""``conf/base/parameters_ab_test.yml``: ``ab_test``."""

from __future__ import annotations

from typing import Literal

from so8t_kedro.parameters._base import Strict


class ArmSpec(Strict):
    """An arm: a language model (``adapter`` as in evaluation.model) or the reference
    classifier (``adapter`` then ignored)."""

    name: str
    kind: Literal["language_model", "reference_classifier"]
    adapter: str | None


class BootstrapParameters(Strict):
    n_resamples: int
    seed: int


class AbTestParameters(Strict):
    model_a: ArmSpec
    model_b: ArmSpec
    primary_metric: str
    min_effect: float
    significance_level: float
    bootstrap: BootstrapParameters
    ece_bins: int


class AbTestFile(Strict):
    ab_test: AbTestParameters
