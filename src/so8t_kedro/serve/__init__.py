"""Serving the /think model: only the final part and the four-class decision go out.

* :func:`load_service` -> :class:`ThinkService` (HF model directory, optionally a GGUF run
  by llama.cpp); ``ThinkService.answer(text, language)`` -> :class:`ThinkAnswer`;
* :func:`make_server`: the ``POST /think`` endpoint (standard library HTTP server) with
  input bounds, a per-client rate limit and a hash-only audit log;
* :func:`japanese_performance_report` / :func:`summarise_performance`: latency,
  tokens/s and format health of models on Japanese prompts;
* ``python -m so8t_kedro.serve``: the command line (one request, or ``--http``).

Framework-free (no Kedro): pipeline nodes call these functions.
"""

from so8t_kedro.serve.audit import AuditLog
from so8t_kedro.serve.inference import (
    FALLBACK_MESSAGES,
    ThinkAnswer,
    ThinkService,
    load_service,
)
from so8t_kedro.serve.performance import (
    JAPANESE_PERFORMANCE_PROMPTS,
    japanese_performance_report,
    summarise_performance,
)
from so8t_kedro.serve.server import ServerLimits, ThinkServer, make_server

__all__ = [
    "FALLBACK_MESSAGES",
    "JAPANESE_PERFORMANCE_PROMPTS",
    "AuditLog",
    "ServerLimits",
    "ThinkAnswer",
    "ThinkServer",
    "ThinkService",
    "japanese_performance_report",
    "load_service",
    "make_server",
    "summarise_performance",
]
