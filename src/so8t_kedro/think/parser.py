"""Parsing replies of the /think format (rendered completions and model generations).

Parsing model generations (adversarial input)
---------------------------------------------
The final part must never hold thinking text. The rules, quadruple format:

* text counts as final only inside the **first** ``<final>`` block opened outside any
  thinking block; a ``<final>`` inside an open thinking block is thinking. A missing
  ``<final>`` gives an empty final, never the raw text;
* well-nested ``<think-*>`` blocks inside the final are removed; any other thinking-tag
  trouble inside the final (a closing tag with no matching opener, a mismatched one) makes
  the whole final ambiguous, and it is discarded;
* an unclosed ``<final>`` runs to the end of the text only if no thinking tag follows it;
  otherwise it stops at the first thinking tag;
* sections-style thinking (``# 思考ステップ`` up to the next ``# 最終回答``) inside a
  final is removed; special tokens (``<|end|>``, ``<|endoftext|>``, ...) are stripped; a
  new turn (``<|user|>``, ``<|system|>``) ends the reply;
* the input is the reply only; a whole chat text is parsed with ``prompt=`` (removed as a
  prefix), never by guessing where ``<|assistant|>`` starts the reply;
* the grammar above only finds the *candidate* final (``ParsedReply.final``). What may be
  shown is decided deny by default by :mod:`so8t_kedro.think.disclosure` (anything that,
  normalised, still looks like markup or thinking withholds it; ``extract_final`` there
  applies it).

The sections format: the final is the text after the first ``# 最終回答`` up to the
next header of either kind, provided no ``<think-*>`` block is still open at that header;
then the same cleaning applies. The decision is read only from the final: a line
``判定: X`` / ``Decision: X`` on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from so8t_kedro.labels import LABELS
from so8t_kedro.think.format import (
    FINAL_TAG,
    SECTION_FINAL_HEADER,
    SECTION_THINKING_HEADER,
    THINK_PARTS,
    THINK_TAGS,
)

_SPECIAL_RE = re.compile(r"<\|[A-Za-z0-9_]+\|>")
_NEW_TURN_RE = re.compile(r"<\|(?:user|system)\|>")
_TAG_RE = re.compile(
    r"<\s*(/?)\s*(think(?:ing)?(?:-[A-Za-z0-9_]+)?|final)\s*>", re.IGNORECASE
)
# Section headers, recognised anywhere (not only at line start): a model that writes
# ``# 思考ステップ`` mid-line inside its final is still writing thinking.
_SECTION_HEADER_RE = re.compile(
    r"#{1,6}[ \t]*(?:(?P<thinking>思考ステップ|思考|thinking(?:[ \t]+steps?)?|reasoning)"
    r"|(?P<final>最終回答))[ \t]*[:：]?[ \t]*(?:\r?\n)?",
    re.IGNORECASE,
)
_DECISION_RE = re.compile(
    r"^[ \t]*(?:判定|decision)[ \t]*[:：][ \t]*(?P<value>[^\n]*?)[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass
class ParsedReply:
    """A reply split into thinking and final parts.

    ``thinking``: ``{"task", "safety", "policy"}`` (quadruple; other ``<think-x>`` tags
    give key ``x``) or ``{"steps"}`` (sections). ``final``: the user-visible final part,
    decision line included, never any thinking text. ``decision``: the label read from a
    ``判定: X`` / ``Decision: X`` line of the final, or ``None``.
    """

    thinking: dict[str, str] = field(default_factory=dict)
    final: str = ""
    decision: str | None = None
    well_formed: bool = False
    problems: list[str] = field(default_factory=list)
    format: str | None = None

    @property
    def answer(self) -> str:
        """The final without its decision line(s)."""
        return without_decision_lines(self.final).strip()


def without_decision_lines(text: str) -> str:
    """``text`` without its decision lines (``判定: X`` / ``Decision: X`` on their own)."""
    return "\n".join(line for line in text.split("\n") if not _DECISION_RE.match(line))


def has_section_header(text: str) -> bool:
    """Whether ``text`` holds a section header the parser recognises (``# 思考ステップ``,
    ``# Reasoning``, ``# 最終回答``...), anywhere."""
    return _SECTION_HEADER_RE.search(text) is not None


def _tag_key(name: str) -> str:
    name = name.lower()
    return name.split("-", 1)[1] if name.startswith("think-") else name


class _Scan(NamedTuple):
    thinking: dict[str, str]
    final: str
    problems: list[str]
    final_seen: bool
    open_thinking: list[str]


def _scan_tags(text: str, in_final: bool = False) -> _Scan:
    """Walk the quadruple tags of ``text`` and sort its text into thinking and final.

    With ``in_final``
    the text is treated as the inside of an already opened ``<final>`` (used to clean a
    sections-format final), and final tags inside it are ignored.
    """
    thinking: dict[str, list[str]] = {}
    problems: list[str] = []
    stack: list[str] = []          # open thinking tags (keys)
    opened: set[str] = set()       # thinking keys seen so far
    state = "in" if in_final else "before"   # before / in / done (first final block)
    final_parts: list[str] = []
    cut: int | None = None         # index in final_parts of the first thinking tag inside it
    poisoned = False               # ambiguous thinking tags inside the final
    extra_finals = 0
    pos = 0

    def take(segment: str) -> None:
        if not segment:
            return
        if stack:
            thinking.setdefault(stack[-1], []).append(segment)
        elif state == "in" and extra_finals == 0:
            final_parts.append(segment)

    for match in _TAG_RE.finditer(text):
        take(text[pos:match.start()])
        pos = match.end()
        closing, name = match.group(1) == "/", match.group(2).lower()
        in_first_final = state == "in" and extra_finals == 0
        if name != FINAL_TAG:
            key = _tag_key(name)
            if in_first_final and cut is None:
                cut = len(final_parts)
            if not closing:
                if in_first_final and not stack:
                    problems.append(f"<{name}> inside the final part")
                elif key in opened:
                    problems.append(f"repeated <{name}>")
                opened.add(key)
                stack.append(key)
            elif key in stack:
                if stack[-1] != key:
                    problems.append(f"</{name}> closes other open thinking tags")
                    if in_first_final:
                        poisoned = True
                del stack[len(stack) - 1 - stack[::-1].index(key):]
            else:
                problems.append(f"</{name}> without a matching opening tag")
                if in_first_final:
                    poisoned = True
            continue
        if stack:
            problems.append(f"{match.group(0)} inside a thinking block (treated as thinking)")
            continue
        if in_final:
            problems.append(f"{match.group(0)} inside the final part (ignored)")
            continue
        if not closing:
            if state == "before":
                state = "in"
            elif state == "in":
                problems.append("nested <final> (ignored)")
            else:
                extra_finals += 1
                state = "in"
                problems.append("repeated <final> block (only the first is used)")
        elif state == "in":
            state = "done"
        else:
            problems.append("</final> without an opening <final>")
    take(text[pos:])

    if stack:
        problems.append("unclosed thinking tag(s): " + ", ".join(f"<{k}>" for k in stack))
    if poisoned:
        problems.append("ambiguous thinking tags inside the final part: final discarded")
        final_parts = []
    elif not in_final and state == "in" and extra_finals == 0:
        problems.append("unclosed <final>")
        if cut is not None:
            final_parts = final_parts[:cut]
    return _Scan(
        thinking={k: "".join(v).strip() for k, v in thinking.items()},
        final="".join(final_parts),
        problems=problems,
        final_seen=state != "before",
        open_thinking=stack,
    )


def _strip_section_thinking(text: str) -> tuple[str, list[str]]:
    """Remove ``# 思考ステップ`` ... (up to the next ``# 最終回答`` or the end) and the
    final headers themselves from a final part."""
    problems: list[str] = []
    out: list[str] = []
    pos = 0
    dropping = False
    for match in _SECTION_HEADER_RE.finditer(text):
        if not dropping:
            out.append(text[pos:match.start()])
        if match.group("thinking") is not None:
            if not dropping:
                problems.append("thinking header inside the final part (removed)")
            dropping = True
        else:
            problems.append("final header inside the final part (removed)")
            dropping = False
        pos = match.end()
    if not dropping:
        out.append(text[pos:])
    return "".join(out), problems


def _clean_final(text: str, *, scan_tags: bool) -> tuple[str, list[str]]:
    problems: list[str] = []
    if scan_tags:
        scan = _scan_tags(text, in_final=True)
        text = scan.final
        problems += scan.problems
    text, section_problems = _strip_section_thinking(text)
    problems += section_problems
    text = _SPECIAL_RE.sub("", _TAG_RE.sub("", text))
    return text.strip(), problems


def _parse_decision(final: str) -> tuple[str | None, list[str]]:
    problems: list[str] = []
    found: list[str] = []
    for match in _DECISION_RE.finditer(final):
        value = match.group("value").strip().upper()
        if value in LABELS:
            found.append(value)
        else:
            problems.append(f"unknown decision {match.group('value').strip()!r}")
    if not found:
        if final:
            problems.append("no decision line in the final part")
        return None, problems
    if len(set(found)) > 1:
        problems.append(f"conflicting decisions {found} (the first is used)")
    elif len(found) > 1:
        problems.append("repeated decision line")
    first_line = next((line for line in final.split("\n") if line.strip()), "")
    if not _DECISION_RE.match(first_line):
        problems.append("the decision is not the first line of the final part")
    return found[0], problems


def _parse_quadruple(text: str) -> ParsedReply:
    scan = _scan_tags(text)
    thinking, problems = scan.thinking, scan.problems
    if not scan.final_seen:
        problems.append("missing <final>")
    final, clean_problems = _clean_final(scan.final, scan_tags=False)
    problems += clean_problems
    for part in THINK_PARTS:
        if not thinking.get(part):
            problems.append(f"missing <{THINK_TAGS[part]}>")
    return ParsedReply(thinking=thinking, final=final, problems=problems, format="quadruple")


def _parse_sections(text: str) -> ParsedReply:
    problems: list[str] = []
    thinking: list[str] = []
    final_region: str | None = None
    headers = list(_SECTION_HEADER_RE.finditer(text))
    if headers and text[: headers[0].start()].strip():
        problems.append("text before the first section header")
    for i, match in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        region = text[match.end():end]
        if match.group("thinking") is not None:
            if final_region is not None:
                problems.append("thinking section after the final section (removed)")
            thinking.append(region.strip())
        elif final_region is None:
            # A <think-*> block still open at the final header makes the "final" thinking.
            if _scan_tags(text[: match.start()]).open_thinking:
                problems.append("final header inside an open thinking tag: final discarded")
                final_region = ""
            else:
                final_region = region
        else:
            problems.append("repeated final section (only the first is used)")
    if not thinking:
        problems.append(f"missing {SECTION_THINKING_HEADER}")
    if final_region is None:
        problems.append(f"missing {SECTION_FINAL_HEADER}")
        final_region = ""
    final, clean_problems = _clean_final(final_region, scan_tags=True)
    problems += clean_problems
    steps = "\n".join(t for t in thinking if t)
    return ParsedReply(thinking={"steps": steps} if steps else {}, final=final,
                       problems=problems, format="sections")


def parse_reply(text: str, *, prompt: str | None = None) -> ParsedReply:
    """Split an assistant reply (a rendered completion or a model generation) into thinking
    and final parts, read the decision, and list what is malformed.

    ``text`` is the reply alone. To parse a whole chat text (prompt + reply), pass its
    ``prompt``: it must be a prefix of ``text`` and is removed. The parser never guesses
    where a prompt ends from ``<|assistant|>``: the user's text and a generation can both
    contain that token, and a wrong guess either hides a generation's thinking tags (leaking
    thinking into the final) or lets the user's text supply the decision.

    Inside the reply, a new turn (``<|user|>`` / ``<|system|>``) ends it and special tokens
    are dropped. The format is quadruple when a ``<final>`` tag is present, else sections
    when a ``# 最終回答`` header is, else whichever kind of thinking marker appears.
    """
    text = "" if text is None else str(text)
    if prompt is not None:
        if not text.startswith(prompt):
            raise ValueError("parse_reply: text does not start with the given prompt")
        text = text[len(prompt):]
    turn = _NEW_TURN_RE.search(text)
    if turn:
        text = text[: turn.start()]
    text = _SPECIAL_RE.sub("", text)

    tags = [(m.group(1), m.group(2).lower()) for m in _TAG_RE.finditer(text)]
    headers = [m for m in _SECTION_HEADER_RE.finditer(text)]
    if any(name == FINAL_TAG and not closing for closing, name in tags):
        reply = _parse_quadruple(text)
    elif any(m.group("final") is not None for m in headers):
        reply = _parse_sections(text)
    elif tags:
        reply = _parse_quadruple(text)
    elif headers:
        reply = _parse_sections(text)
    else:
        reply = ParsedReply(problems=["no thinking or final markers"])
    if turn is not None and turn.start() == 0:
        reply.problems.append("text starts with a chat turn: pass prompt= to parse a whole "
                              "chat text")

    reply.decision, decision_problems = _parse_decision(reply.final)
    reply.problems += decision_problems
    if not reply.final and "final part is empty" not in reply.problems:
        reply.problems.append("final part is empty")
    reply.well_formed = not reply.problems
    return reply
