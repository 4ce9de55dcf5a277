"""An ``evaluation_metrics`` dict as the evaluation pipeline saves it, for the model card
tests (the card's evaluation table and the hook that rewrites the card with it)."""

EVALUATION = {
    "model": "so8t", "n_samples": 40, "ece_bins": 15, "accuracy": 0.5, "macro_f1": 0.45,
    "unsafe_miss_rate": 0.2, "over_refusal_rate": 0.3, "ece": 0.12, "brier": 0.6,
    "uncalibrated": {"temperature": 1.0, "ece": 0.12, "brier": 0.6, "nll": 1.1},
    "calibrated": {"temperature": 0.74, "ece": 0.08, "brier": 0.55, "nll": 1.0},
    "baselines": {
        "reference_classifier": {"model": "reference_classifier", "accuracy": 0.8,
                                 "macro_f1": 0.81, "unsafe_miss_rate": 0.05,
                                 "over_refusal_rate": 0.1, "ece": 0.07, "brier": 0.25},
        "majority_class": {"model": "majority class (ALLOW)", "accuracy": 0.25,
                           "macro_f1": 0.1, "unsafe_miss_rate": 1.0},
    },
}
