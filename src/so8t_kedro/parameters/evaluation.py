"""``conf/base/parameters_evaluation.yml``: ``scoring`` and ``evaluation``."""

from __future__ import annotations

from typing import Literal

from so8t_kedro.parameters._base import Strict


class ScoringParameters(Strict):
    batch_size: int
    max_probe_tokens: int
    quantization: Literal["8bit", "4bit"] | None
    device: str


class ModelSpec(Strict):
    """A model to score: ``adapter`` null, ``catalog``, a version stamp or a directory."""

    name: str
    adapter: str | None


class TestSetParameters(Strict):
    source: Literal["split", "external"]
    file_pattern: str
    raw_snippet_chars: int


class TfidfParameters(Strict):
    analyzer: str
    ngram_range: list[int]
    sublinear_tf: bool


class LogisticRegressionParameters(Strict):
    C: float
    max_iter: int


class ReferenceClassifierParameters(Strict):
    tfidf: TfidfParameters
    logistic_regression: LogisticRegressionParameters
    seed: int


class EvaluationParameters(Strict):
    model: ModelSpec
    test_set: TestSetParameters
    ece_bins: int
    min_samples_per_class: int
    reference_classifier: ReferenceClassifierParameters


class EvaluationFile(Strict):
    scoring: ScoringParameters
    evaluation: EvaluationParameters
