"""The parameters files read by hooks and the /think service rather than by nodes:
``parameters_model_cards.yml``, ``parameters_run_hooks.yml``, ``parameters_serve.yml``,
``parameters_thinking_sft.yml`` and ``parameters_tracking.yml``."""

from __future__ import annotations

from typing import Literal

from so8t_kedro.parameters._base import Strict
from so8t_kedro.tracking.cards import ModelCardsConfig
from so8t_kedro.tracking.config import TrackingConfig


class ModelCardsFile(Strict):
    # ModelCardsConfig (tracking/cards.py) is the model-card hooks' own model.
    model_cards: ModelCardsConfig


class RunHooksParameters(Strict):
    notify_command: str | None
    notify_timeout_s: float


class RunHooksFile(Strict):
    run_hooks: RunHooksParameters


class ReplyPolicySwitches(Strict):
    # Optional on purpose: left out, a switch takes its safe value (serve.policy.ReplyPolicy).
    escalation_includes_model_answer: bool | None = None
    on_decision_disagreement: Literal["withhold", "show"] | None = None


class ServeParameters(Strict):
    reply_policy: ReplyPolicySwitches | None = None  # optional, as its switches
    # class (or fallback) -> language -> reply text
    replies: dict[str, dict[str, str]]


class ServeFile(Strict):
    serve: ServeParameters


class ThinkingSftParameters(Strict):
    format: Literal["quadruple", "sections"]
    seed: int
    max_quoted_chars: int
    validate_round_trip: bool


class ThinkingSftFile(Strict):
    thinking_sft: ThinkingSftParameters


class TrackingFile(Strict):
    # TrackingConfig (tracking/config.py) is the tracking hooks' own model.
    tracking: TrackingConfig
