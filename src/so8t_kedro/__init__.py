"""so8t-kedro: SO8T rotation-gate + QLoRA retraining of Japanese Phi-3.5 for request safety.

Importing the package is where every entry point starts (``kedro``, the serve CLI,
``accelerate launch``, the tests), so it turns off, before any Hugging Face library is
imported, every way a library would fetch or run code or weights from a hub:

* ``HF_HUB_OFFLINE=1`` (huggingface_hub's documented switch: no network access; models are
  local directories), unless the caller set it;
* ``USE_HUB_KERNELS=NO`` (transformers' documented switch for Hub kernels);
* the ``kernels`` package (the Hub-kernel downloader that transformers depends on) cannot be
  imported in the project's processes. bitsandbytes (0.50) calls
  ``kernels.get_kernel("kernels-community/...")`` when it is imported on a CPU with
  AVX512-BF16, and has no switch of its own; with ``kernels`` unimportable it takes its own
  fallback (its native CPU kernel) without asking the Hub. ``None`` in ``sys.modules`` is
  Python's documented way to make an import fail. bitsandbytes' warning about that one
  cause is dropped (:class:`~so8t_kedro.logging_filters.HubKernelsOffNotice`).
"""

import logging
import os
import sys

from so8t_kedro.logging_filters import BNB_CPU_OPS_LOGGER, HUB_KERNELS_OFF_NOTICE

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("USE_HUB_KERNELS", "NO")
sys.modules.setdefault("kernels", None)
logging.getLogger(BNB_CPU_OPS_LOGGER).addFilter(HUB_KERNELS_OFF_NOTICE)

__version__ = "0.1.0"
