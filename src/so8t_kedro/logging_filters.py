"""The known-benign warnings and log lines of a normal run, dropped one by one, each with why.

Everything else stays visible: each filter matches one message from one place. Python
warnings are dropped with ``warnings.filterwarnings`` (they never reach logging); log
records with a :class:`logging.Filter` on the logger that emits them.

They are installed from code (``settings.py`` calls :func:`silence_benign_noise`), not from
``conf/logging.yml``: Kedro only builds filter classes from ``logging``, ``kedro.logging``
and modules listed in the ``KEDRO_LOGGING_MODULE_ALLOWLIST`` environment variable, and a
project setting should not depend on every user exporting that. Framework-free: the
training loop uses :class:`Int8CastNotice` outside Kedro too.
"""

from __future__ import annotations

import logging
import warnings

BNB_MATMUL_LOGGER = "bitsandbytes.autograd._functions"
BNB_CPU_OPS_LOGGER = "bitsandbytes.backends.cpu.ops"
KEDRO_MLFLOW_HOOK_LOGGER = "kedro_mlflow.framework.hooks.mlflow_hook"
PY_WARNINGS_LOGGER = "py.warnings"  # where logging.captureWarnings sends warnings


class Int8CastNotice(logging.Filter):
    """bitsandbytes logs, on every 8-bit matmul, that fp32 inputs are cast to fp16 for the
    int8 product: that is how LLM.int8 works, and one line per step hides the progress."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("MatMul8bitLt: inputs will be cast")


class HubKernelsOffNotice(logging.Filter):
    """bitsandbytes logs, when imported on an AVX512-BF16 CPU, that it could not load its Hub
    kernel and asks to ``pip install kernels``. The project makes ``kernels`` unimportable on
    purpose (``so8t_kedro/__init__.py``: no code from a hub), so that cause, and only that
    cause, is dropped: any other failure of the lookup still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "import of kernels halted" not in record.getMessage()


class UntypedPredictNotice(logging.Filter):
    """`kedro` imports every installed plugin's commands (kedro-mlflow's too, tracking on or
    off, before any project code but the ``kedro.init`` entry point runs), and kedro-mlflow
    defines an MLflow model class with an untyped ``predict``, which MLflow remarks on at
    import. We never log that kind of model. MLflow raises the warning under its own
    ``simplefilter("once")``, which outranks ``warnings.filterwarnings``, so it is dropped
    where Kedro's logging receives it (``logging.captureWarnings``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Add type hints to the `predict` method" not in record.getMessage()


class LongParamAsTagNotice(logging.Filter):
    """kedro-mlflow's notice that a parameter over MLflow's length limit became a tag."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().endswith(") is set as a tag.")


# One instance each, so that installing twice does not stack filters (addFilter skips a
# repeat).
_INT8_CAST_NOTICE = Int8CastNotice()
_LONG_PARAM_AS_TAG_NOTICE = LongParamAsTagNotice()
_UNTYPED_PREDICT_NOTICE = UntypedPredictNotice()
HUB_KERNELS_OFF_NOTICE = HubKernelsOffNotice()


def silence_benign_noise() -> None:
    """Drop the known-benign warnings and log lines; safe to call more than once."""
    # omegaconf 2.4 deprecated register_new_resolver(); Kedro 1.7's OmegaConfigLoader still
    # calls it each time it builds or resolves config (three warnings per `kedro run`).
    # Nothing to change on our side: Kedro has to move to register_resolver().
    warnings.filterwarnings(
        "ignore",
        message=r"register_new_resolver\(\) is deprecated",
        category=UserWarning,
        module=r"kedro\.config\.omegaconf_config",
    )
    # peft's get_peft_model probes `model.is_gradient_checkpointing`, which transformers 5
    # renamed to `is_activation_checkpointing`; the FutureWarning is raised inside
    # transformers on peft's behalf, once per training run. Our code does not use the name.
    warnings.filterwarnings(
        "ignore",
        message="`is_gradient_checkpointing` is deprecated",
        category=FutureWarning,
        module=r"transformers\.modeling_utils",
    )
    # bitsandbytes' int8 cast notice (see Int8CastNotice), for every pipeline that runs an
    # 8-bit model, not only the training loop that filters it itself.
    logging.getLogger(BNB_MATMUL_LOGGER).addFilter(_INT8_CAST_NOTICE)
    # kedro-mlflow 2.0 calls the same deprecated omegaconf function (above) when its hook
    # registers its resolver.
    warnings.filterwarnings(
        "ignore",
        message=r"register_new_resolver\(\) is deprecated",
        category=UserWarning,
        module=r"kedro_mlflow\.framework\.hooks\.mlflow_hook",
    )
    # MLflow's notice on kedro-mlflow's untyped model class (see UntypedPredictNotice).
    logging.getLogger(PY_WARNINGS_LOGGER).addFilter(_UNTYPED_PREDICT_NOTICE)
    # A parameter longer than MLflow's limit (the PII recognisers list) is logged as a tag,
    # as conf/base/mlflow.yml asks (long_params_strategy: tag); kedro-mlflow warns of it
    # at every node that takes it.
    logging.getLogger(KEDRO_MLFLOW_HOOK_LOGGER).addFilter(_LONG_PARAM_AS_TAG_NOTICE)
