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


# One instance each, so that installing twice does not stack filters (addFilter skips a
# repeat).
_INT8_CAST_NOTICE = Int8CastNotice()
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
