"""Experiment tracking with MLflow through kedro-mlflow, and live training metrics.

- :mod:`.hooks`: :class:`~.hooks.MlflowTrackingHooks`, kedro-mlflow's hook behind the
  ``tracking.enabled`` switch, plus what kedro-mlflow does not log by itself (metrics and
  reports from saved datasets, models with their cards, git commit, dataset versions,
  HPO trials as nested runs, the error of a failed run).
- :mod:`.steps`: :class:`~.steps.MlflowStepTracker`, an accelerate tracker that the
  training loop logs each optimiser step's losses and throughput to.
- :mod:`.cards`: :class:`~.cards.ModelCardHooks`, the model card beside every adapter and
  baked model (tracking on or off).
- :mod:`.config`: the typed ``params:tracking``.

Only :mod:`.steps` is imported by non-Kedro code (the training node).
"""
