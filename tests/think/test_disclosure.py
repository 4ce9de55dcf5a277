"""The deny-by-default disclosure rules: no candidate final part that holds thinking passes.

Thinking is generated as a random secret token wrapped in random tag spellings (the
format's own names and others), widths (full-width), cases, escapes (HTML entities, double
escapes, backslash and percent escapes), angle-bracket look-alikes, invisible characters
(format characters and other default-ignorables) at random places in the markers, and
random positions in the final part; or as sections-format thinking with varied headers
and step lines (tests/helpers/thinking_replies.py). What leaves the server and the CLI:
tests/serve/test_disclosure_paths.py.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, given, settings

from so8t_kedro.think import parse_reply
from so8t_kedro.think.disclosure import (
    MAX_NORMALISE_ROUNDS,
    disclose,
    normalise,
    strip_invisible,
    withheld_reason,
)
from tests.helpers.thinking_replies import replies_with_thinking

GATE_EXAMPLES = 2000  # one example per strategy draw; the count the README reports


@settings(max_examples=GATE_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(replies_with_thinking())
def test_property_no_thinking_passes_the_rules(case):
    secret, _, reply = case
    candidate = parse_reply(reply).final
    disclosure = disclose(candidate)
    event("the parser let the secret through" if secret in candidate
          else "the parser removed the secret")
    if secret in candidate:  # the rules must stop it
        assert disclosure.answer is None and disclosure.reason is not None
        event(f"withheld: {disclosure.reason}")
    assert secret not in (disclosure.answer or "")


@pytest.mark.parametrize("text, reason", [
    ("判定: ALLOW\nふつうの回答です。", None),
    ("Use a list comprehension: [x for x in items if x > 0].", None),
    ("1 < 2 and 3 > 2 are both true", "markup"),        # deny by default: a false positive
    ("<b>bold</b>", "markup"),
    ("<think", "markup"),                                # a tag cut off by max_new_tokens
    ("a＜/ x", "markup"),
    ("text &amp;lt;think&amp;gt; more", "markup"),
    ("\\u003cthink\\u003e", "markup"),
    ("%3Cthink%3E", "markup"),
    ("〈思考〉", "markup"),
    ("ＴＨＩＮＫ＿ＴＡＳＫ: x", "thinking"),
    ("I think-task lists help", "thinking"),
    ("I think task lists help", None),                  # plain English stays
    ("##  思考ステップ", "thinking"),
    ("ok\n＃ Reasoning\nx", "thinking"),              # a header the parser knows
    ("note\n  **2) リスクの評価**：高い", "thinking"),
    ("Policy: see the manual", "thinking"),
    ("the policy: see the manual", None),                # not at the start of the line
    ("Thought: the user wants x\nok", "thinking"),     # words that name thinking itself
    ("ok\n- **Reasoning**: because", "thinking"),
    ("[思考] 危険かどうか", "thinking"),                   # a bracket label, no colon
    ("【推論】ユーザーは", "thinking"),
    ("理由: 安いからです。", None),                      # "reason" is an answer's word
    ("回答です 判定: DENY", "decision"),
    ("判定: ALLOW", "empty"),
    ("\u200b\u2060", "empty"),
    ("&amp;" * 3 + "amp;" * MAX_NORMALISE_ROUNDS + "lt;x", "unstable"),
])
def test_rules(text, reason):
    assert withheld_reason(text) == reason


def test_normalise_folds_widths_escapes_and_invisible_characters():
    assert normalise("ＡＢＣ&amp;lt;\u200bx\u2028y") == "ABC<x\ny"
    assert normalise("&amp;" + "amp;" * (MAX_NORMALISE_ROUNDS + 1) + "lt;") is None


def test_shown_answer_drops_decision_lines_and_invisible_characters():
    disclosure = disclose("判定：ALLOW\n肉じゃが\u200bの作り方です。\n判定: ALLOW")
    assert disclosure == disclose("判定: ALLOW\n肉じゃがの作り方です。")
    assert disclosure.answer == "肉じゃがの作り方です。" and disclosure.reason is None
    assert strip_invisible("a\u00adb\r\nc") == "ab\nc"
