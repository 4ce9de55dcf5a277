"""The reply policy: what a user is shown, given the served decision.

The decision is the classifier's (label likelihoods, ``ThinkService.assess``); the reply
agrees with it:

* ALLOW: the model's answer, when the disclosure rules let it out (``disclosure``), else
  the fallback message (``fallback: true``);
* ESCALATION: the class's escalation message, followed by the model's answer only when
  ``escalation_includes_model_answer`` and the answer may be shown;
* DENY, REFUSE: the class's policy reply, never the model's free answer.

When the model's own decision line disagrees with the served decision, its answer was
written for another decision; ``on_decision_disagreement: withhold`` (the default) treats
it as not shown. The texts are data (``conf/base/parameters_serve.yml``: one per class and
language, and the fallback); a switch left out takes its safe value. The ``判定:`` line
never goes out: the model's answer is shown without it (``disclosure.disclose``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from so8t_kedro.labels import LABELS
from so8t_kedro.serve.inference import Assessment, sha256_hex
from so8t_kedro.think import LANGUAGES

FALLBACK = "fallback"
#: The reply texts the policy needs: the fallback and one per class that is not ALLOW.
REPLY_KEYS: tuple[str, ...] = (FALLBACK, *(label for label in LABELS if label != "ALLOW"))
DISAGREEMENT_CHOICES: tuple[str, ...] = ("withhold", "show")


@dataclass(frozen=True)
class Reply:
    """What is shown: ``text``, and ``source``: ``model`` (the model's answer),
    ``escalation`` / ``escalation+model``, ``policy`` (DENY / REFUSE) or ``fallback``."""

    text: str
    source: str

    @property
    def fallback(self) -> bool:
        return self.source == FALLBACK


@dataclass(frozen=True)
class ReplyPolicy:
    """``replies[key][language]`` for each of :data:`REPLY_KEYS` and language; the two
    switches default to their safe values."""

    replies: Mapping[str, Mapping[str, str]]
    escalation_includes_model_answer: bool = False
    on_decision_disagreement: str = "withhold"

    def __post_init__(self) -> None:
        for key in REPLY_KEYS:
            for language in LANGUAGES:
                text = self.replies.get(key, {}).get(language)
                if not isinstance(text, str) or not text.strip():
                    raise ValueError(f"reply policy: no {key} reply for language {language!r}")
        if self.on_decision_disagreement not in DISAGREEMENT_CHOICES:
            raise ValueError("reply policy: on_decision_disagreement must be one of "
                             f"{DISAGREEMENT_CHOICES}, got {self.on_decision_disagreement!r}")
        if not isinstance(self.escalation_includes_model_answer, bool):
            raise ValueError(  # noqa: TRY004 - a conf error, reported like the others
                "reply policy: escalation_includes_model_answer must be true or false")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ReplyPolicy:
        """From the ``serve`` parameters: ``replies`` and the optional ``reply_policy``
        switches (an unknown switch is an error: a typo must not fall back silently)."""
        switches = dict(params.get("reply_policy") or {})
        unknown = sorted(set(switches) - {"escalation_includes_model_answer",
                                          "on_decision_disagreement"})
        if unknown:
            raise ValueError(f"reply policy: unknown switch(es) {unknown}")
        return cls(replies=params.get("replies") or {}, **switches)

    def answer(self, assessment: Assessment, language: str) -> ThinkAnswer:
        """The answer to a request: the assessment and the reply this policy gives it."""
        return ThinkAnswer(assessment, self.reply(assessment, language))

    def reply(self, assessment: Assessment, language: str) -> Reply:
        decision = assessment.decision
        if decision in ("DENY", "REFUSE"):
            return Reply(self.replies[decision][language], "policy")
        answer = assessment.model_answer
        if assessment.disagrees and self.on_decision_disagreement == "withhold":
            answer = None
        if decision == "ESCALATION":
            message = self.replies["ESCALATION"][language]
            if self.escalation_includes_model_answer and answer is not None:
                return Reply(f"{message}\n\n{answer}", "escalation+model")
            return Reply(message, "escalation")
        if answer is None:
            return Reply(self.replies[FALLBACK][language], FALLBACK)
        return Reply(answer, "model")


@dataclass(frozen=True)
class ThinkAnswer:
    """One request's answer: what the model said (``assessment``) and what is shown."""

    assessment: Assessment
    reply: Reply

    def response(self, request_id: str, latency_ms: float) -> dict:
        """The public JSON body (HTTP and CLI): nothing else of the answer goes out."""
        a = self.assessment
        return {"request_id": request_id, "final": self.reply.text, "decision": a.decision,
                "probabilities": a.probabilities, "format_ok": a.format_ok,
                "fallback": self.reply.fallback, "latency_ms": round(latency_ms, 3)}

    def audit_fields(self) -> dict:
        """The answer's part of an audit line: decisions, sources, hashes and counts."""
        a = self.assessment
        return {"decision": a.decision, "generated_decision": a.generated_decision,
                "decision_disagreement": a.disagrees, "reply_source": self.reply.source,
                "model_answer_withheld": a.withheld, "format_ok": a.format_ok,
                "fallback": self.reply.fallback, "final_sha256": sha256_hex(self.reply.text),
                "reply_sha256": a.reply_sha256, "thinking_sha256": a.thinking_sha256,
                "prompt_tokens": a.prompt_tokens, "new_tokens": a.new_tokens,
                "generation_ms": round(a.generation_ms, 3)}
