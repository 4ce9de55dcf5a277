"""so8t-kedro: SO8T rotation-gate + QLoRA retraining of Japanese Phi-3.5 for request safety."""

__version__ = "0.1.0"
