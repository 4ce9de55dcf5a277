"""The reply policy: the reply agrees with the decision, texts come from conf, and the
switches left out take their safe values."""

from __future__ import annotations

import pytest

from so8t_kedro.labels import LABELS
from so8t_kedro.serve.inference import Assessment
from so8t_kedro.serve.policy import REPLY_KEYS, ReplyPolicy
from so8t_kedro.think import LANGUAGES

ANSWER = "モデルの回答です。"


def assessment(decision: str, *, model_answer: str | None = ANSWER,
               generated: str | None = None) -> Assessment:
    return Assessment(decision=decision, probabilities=dict.fromkeys(LABELS, 0.25),
                      generated_decision=generated if generated else decision,
                      model_answer=model_answer, withheld=None if model_answer else "markup",
                      format_ok=True, reply_sha256="", thinking_sha256={}, prompt_tokens=1,
                      new_tokens=1, generation_ms=1.0, latency_ms=1.0)


def test_conf_has_every_reply_in_every_language(policy):
    for key in REPLY_KEYS:
        for language in LANGUAGES:
            assert policy.replies[key][language].strip()
    assert policy.escalation_includes_model_answer is True
    assert policy.on_decision_disagreement == "withhold"


@pytest.mark.parametrize("language", LANGUAGES)
def test_reply_agrees_with_the_decision(policy, language):
    replies = policy.replies
    cases = {
        "ALLOW": (ANSWER, "model"),
        "ESCALATION": (f"{replies['ESCALATION'][language]}\n\n{ANSWER}", "escalation+model"),
        "DENY": (replies["DENY"][language], "policy"),
        "REFUSE": (replies["REFUSE"][language], "policy"),
    }
    for decision, (text, source) in cases.items():
        reply = policy.reply(assessment(decision), language)
        assert (reply.text, reply.source, reply.fallback) == (text, source, False)
    # Nothing of the model's may be shown: ALLOW falls back, ESCALATION keeps its message.
    withheld = {decision: policy.reply(assessment(decision, model_answer=None), language)
                for decision in LABELS}
    assert (withheld["ALLOW"].text, withheld["ALLOW"].fallback) == (
        replies["fallback"][language], True)
    assert (withheld["ESCALATION"].text, withheld["ESCALATION"].source) == (
        replies["ESCALATION"][language], "escalation")
    assert withheld["REFUSE"].text == replies["REFUSE"][language]


def test_disagreement_withholds_by_default_and_can_be_shown(policy):
    disagreeing = assessment("ALLOW", generated="REFUSE")
    assert disagreeing.disagrees
    assert policy.reply(disagreeing, "ja").source == "fallback"
    shown = ReplyPolicy(policy.replies, on_decision_disagreement="show")
    assert shown.reply(disagreeing, "ja").text == ANSWER
    # DENY / REFUSE never show the model's answer, whatever the switches.
    permissive = ReplyPolicy(policy.replies, escalation_includes_model_answer=True,
                             on_decision_disagreement="show")
    assert permissive.reply(assessment("DENY", generated="ALLOW"), "en").source == "policy"


def test_switches_left_out_take_the_safe_values(policy):
    safe = ReplyPolicy.from_params({"replies": policy.replies})
    assert safe.escalation_includes_model_answer is False
    assert safe.on_decision_disagreement == "withhold"
    assert safe.reply(assessment("ESCALATION"), "en").text == policy.replies["ESCALATION"]["en"]


@pytest.mark.parametrize("params, message", [
    ({"replies": {}}, "no fallback reply"),
    ({"replies": "REPLIES", "reply_policy": {"escalation_include_model_answer": True}},
     "unknown switch"),
    ({"replies": "REPLIES", "reply_policy": {"on_decision_disagreement": "ignore"}},
     "on_decision_disagreement"),
    ({"replies": "REPLIES", "reply_policy": {"escalation_includes_model_answer": "yes"}},
     "true or false"),
])
def test_invalid_policies_are_refused(params, message, policy):
    if params["replies"] == "REPLIES":
        params = {**params, "replies": policy.replies}
    with pytest.raises(ValueError, match=message):
        ReplyPolicy.from_params(params)
    missing_en = {key: {"ja": texts["ja"]} for key, texts in policy.replies.items()}
    with pytest.raises(ValueError, match="for language 'en'"):
        ReplyPolicy(missing_en)
