"""Hypothesis strategies for replies whose thinking is wrapped every way a model might:
a random secret token in random tag spellings, widths, cases, escapes, angle-bracket
look-alikes and invisible characters, or sections-format thinking (tests/think/ and
tests/serve/ use them)."""

from __future__ import annotations

from hypothesis import strategies as st

from so8t_kedro.think import LANGUAGES, THINK_PARTS, THINK_TAGS, format_assistant

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
