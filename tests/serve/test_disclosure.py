"""The deny-by-default disclosure rules, and the property that no byte of the thinking
reaches the response body, the CLI output or the audit log, however it is wrapped.

Thinking is generated as a random secret token wrapped in random tag spellings (the
format's own names and others), widths (full-width), cases, escapes (HTML entities, double
escapes, backslash and percent escapes), angle-bracket look-alikes, invisible characters
(format characters and other default-ignorables) at random places in the markers, and
random positions in the final part; or as sections-format thinking with varied headers
and step lines.
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from so8t_kedro.serve import ThinkService
from so8t_kedro.serve import __main__ as cli
from so8t_kedro.serve.disclosure import (
    MAX_NORMALISE_ROUNDS,
    disclose,
    normalise,
    strip_invisible,
    withheld_reason,
)
from so8t_kedro.think_format import (
    LANGUAGES,
    THINK_PARTS,
    THINK_TAGS,
    format_assistant,
    parse_reply,
)

# One example per strategy draw; the counts are the ones reported in the README.
GATE_EXAMPLES = 2000
END_TO_END_EXAMPLES = 300

SECRETS = st.text(alphabet="0123456789abcdef", min_size=12, max_size=12).map(
    lambda tail: f"SECRET{tail}")
TAG_NAMES = st.one_of(
    st.sampled_from([*THINK_TAGS.values(), "think", "thinking", "reasoning", "thought",
                     "scratchpad", "think_task", "think-safety-extra", "analysis", "思考"]),
    st.from_regex(r"[a-z][a-z0-9_.-]{0,10}", fullmatch=True),
)
BRACKETS = st.sampled_from([
    ("<", ">"), ("＜", "＞"), ("﹤", "﹥"), ("&lt;", "&gt;"), ("&LT;", "&GT;"),
    ("&#60;", "&#62;"), ("&#x3C;", "&#x3e;"), ("&amp;lt;", "&amp;gt;"),
    ("&amp;amp;lt;", "&amp;amp;gt;"), ("\\u003c", "\\u003e"), ("\\x3c", "\\x3e"),
    ("%3C", "%3E"), ("%26lt%3B", "%26gt%3B"), ("〈", "〉"), ("《", "》"), ("‹", "›"),
    ("⟨", "⟩"), ("❮", "❯"), ("˂", "˃"), ("«", "»"), ("︿", "﹀"),
])
INVISIBLE = st.sampled_from([
    "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u200e", "\u200f",
    "\u202e", "\u2066", "\U000e0041", "\ufe0f", "\u180e", "\u3164", "\u034f", "\u061c",
    "\u115f", "\U000e0100",
])
FILLER = st.text(alphabet=st.sampled_from("あいうえおかきくけこ日本語テキスト abcxyz0123.,!?\n"),
                 max_size=12)


def _full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@st.composite
def _styled(draw, text: str) -> str:
    """``text`` with random case, width and invisible characters."""
    chars = []
    for char in text:
        if draw(st.booleans()):
            char = char.swapcase()
        if draw(st.integers(0, 3)) == 0:
            char = _full_width(char)
        chars.append(char)
        if draw(st.integers(0, 4)) == 0:
            chars.append(draw(INVISIBLE))
    return "".join(chars)


@st.composite
def tagged_thinking(draw, secret: str) -> str:
    """The secret inside a tag-shaped wrapper of some spelling."""
    name = draw(_styled(draw(TAG_NAMES)))
    opening, closing = draw(BRACKETS)
    blank = draw(st.sampled_from(["", " ", "\n", "\u3000", "\u00a0", "\u200b", "\ufeff"]))
    attribute = draw(st.sampled_from(["", ' id="1"', " x", " /"]))
    shape = draw(st.sampled_from(["pair", "open", "close", "self-closing"]))
    open_tag = f"{opening}{blank}{name}{attribute}{closing}"
    close_tag = f"{opening}/{blank}{name}{closing}"
    return {"pair": f"{open_tag}{secret}{close_tag}", "open": f"{open_tag}{secret}",
            "close": f"{secret}{close_tag}",
            "self-closing": f"{opening}{name}/{closing}{secret}"}[shape]


@st.composite
def section_thinking(draw, secret: str) -> str:
    """The secret under a sections-format header or on a thinking step's line."""
    language = draw(st.sampled_from(LANGUAGES))
    rendered = format_assistant(dict.fromkeys(THINK_PARTS, secret), "", "sections", language)
    header, *steps = [line for line in rendered.splitlines() if secret in line or
                      line.startswith("#")][:4]
    line = draw(st.sampled_from([line for line in steps if secret in line]))
    lead, rest = line.split(" ", 1)
    lead = draw(st.sampled_from([lead, "-", "*", "##", "①", "", "(1)", "**"]))
    rest = draw(_styled(rest.replace(secret, "\x00"))).replace("\x00", secret)
    return draw(st.sampled_from([f"{lead} {rest}", f"{draw(_styled(header))}\n{secret}"]))


@st.composite
def replies_with_thinking(draw) -> tuple[str, str, str]:
    """(secret, decision label of the generated line, raw generation)."""
    secret = draw(SECRETS)
    if draw(st.booleans()):
        thinking = draw(tagged_thinking(secret))
        joiner = draw(st.sampled_from(["", " ", "\n"]))  # anywhere
    else:
        thinking = draw(section_thinking(secret))
        joiner = "\n"  # the rule is about lines that begin like thinking
    before, after = draw(FILLER), draw(FILLER)
    label = draw(st.sampled_from(["ALLOW", "ESCALATION"]))
    final = f"判定: {label}\n{before}{joiner}{thinking}{joiner}{after}"
    reply = draw(st.sampled_from([
        f"<think-task>t</think-task><final>{final}</final>",
        f"<final>{final}",
        f"# 思考ステップ\n1. x: t\n\n# 最終回答\n{final}",
    ]))
    return secret, label, reply


# --------------------------------------------------------------------- the rules


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


# ---------------------------------------------------- what leaves the process


@pytest.fixture
def answer_paths(make_app, scripted, policy, tmp_path, monkeypatch):
    """One ScriptedBackend behind the app (TestClient) and the CLI; the test sets its reply."""
    backend = scripted()
    service = ThinkService(backend)
    served = make_app(service)
    monkeypatch.setattr(cli, "load_service", lambda *args, **kwargs: service)
    return backend, TestClient(served.app), served.audit.path, tmp_path / "cli-audit.jsonl"


@settings(max_examples=END_TO_END_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=replies_with_thinking(), language=st.sampled_from(LANGUAGES))
def test_property_thinking_never_reaches_body_cli_or_audit(case, language, answer_paths,
                                                           project_root):
    secret, label, reply = case
    backend, client, audit_path, cli_audit = answer_paths
    backend.reply = reply
    # The scores agree with the generated decision line: no disagreement hides the answer.
    backend.scores = [0.0, -3.0, -4.0, -5.0] if label == "ALLOW" else [-3.0, 0.0, -4.0, -5.0]
    response = client.post("/think", json={"text": "質問です", "language": language})
    assert response.status_code == 200
    assert secret not in response.text
    assert json.loads(response.text)["decision"] == label

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert cli.main(["--model-dir", "unused", "--conf-source",
                         str(project_root / "conf"), "--env", "base", "--audit-log",
                         str(cli_audit), "--language", language, "質問です"]) == 0
    assert secret not in stdout.getvalue()
    assert json.loads(stdout.getvalue())["final"] == response.json()["final"]
    for log in (audit_path, cli_audit):
        assert secret not in log.read_text("utf-8")
