"""Serving the /think model: only the final reply and the four-class decision go out.

* :func:`load_service` -> :class:`ThinkService` (HF model directory, optionally a GGUF run
  by llama.cpp); ``ThinkService.assess(text, language)`` -> :class:`Assessment` (the
  decision, and the model's answer only when the deny-by-default rules of
  :mod:`~so8t_kedro.think.disclosure` let it out);
* :class:`ReplyPolicy` (texts from ``conf/base/parameters_serve.yml``): what is shown for
  the decision, ``ReplyPolicy.answer(assessment, language)`` -> :class:`ThinkAnswer`;
* :func:`create_app`: the FastAPI app (``POST /think``, ``GET /healthz``, ``GET /``) with
  input bounds, a per-client rate limit, an API key off loopback and a hash-only audit log;
* :func:`japanese_performance_report` / :func:`summarise_performance`: latency,
  tokens/s and format health of models on Japanese prompts;
* ``python -m so8t_kedro.serve``: the command line (one request, or ``--http``).

Framework-free (no Kedro) but for ``serve.config``, which reads the project's conf.
"""

from so8t_kedro.serve.app import ServerLimits, create_app
from so8t_kedro.serve.audit import AuditLog
from so8t_kedro.serve.inference import Assessment, ThinkService, load_service
from so8t_kedro.serve.performance import (
    japanese_performance_report,
    summarise_performance,
)
from so8t_kedro.serve.policy import ReplyPolicy, ThinkAnswer

__all__ = [
    "Assessment",
    "AuditLog",
    "ReplyPolicy",
    "ServerLimits",
    "ThinkAnswer",
    "ThinkService",
    "create_app",
    "japanese_performance_report",
    "load_service",
    "summarise_performance",
]
