"""Deny by default: may the final part of a generation be shown to the user?

The parser (:func:`so8t_kedro.think.parser.parse_reply`) finds the *candidate* final part with the tag
grammar of the /think format. A model for which the tags are just text writes variants
that grammar does not know (``<think_task>``, full-width ``＜think-task＞``, HTML-escaped
``&lt;think-task&gt;``, a zero-width space inside a tag, ...). No list of bad forms can
keep up with that, so this module does the opposite: it shows a candidate only when
nothing in it, once normalised, still looks like markup or like thinking.

Normalisation (:func:`normalise`), repeated until the text no longer changes: HTML
entities unescaped, Unicode NFKC (full-width and other compatibility forms folded),
invisible characters removed (format characters, category Cf, and the rest of Unicode's
default-ignorable code points; controls, surrogates, private-use and unassigned code
points), line separators made ``\\n``. A second, *decoded* view also undoes percent,
backslash (``\\u003c``) and entity escapes layered in any order; a candidate is withheld
when either view fails.

Withheld (:func:`withheld_reason`):

* ``markup``: anything ``<...>``-shaped: an opening bracket, optional blanks and one of
  ``/ ! ?``, then a letter (a tag name, even unclosed); or brackets around a run with a
  letter or ``/`` in it. Every angle-bracket character of Unicode (``〈 《 ‹ « ⟨ ❮ ˂``...,
  found by their character names) counts as ``<`` / ``>``;
* ``thinking``: the format's own markers, derived from :mod:`so8t_kedro.think.format`, not listed here:
  the section headers of the sections format (their words anywhere, and any header the
  parser recognises, ``# Reasoning`` included), the thinking tags' names written as words
  (``think-task``, ``THINK_TASK``, ``think.task``...), and a line that begins like a
  thinking part (a rendered sections thinking step, ``1. 依頼の把握:`` / ``1. Task:``, a
  thinking part's name, or a word that names thinking itself (``Thought:``, ``【推論】``),
  with any list marker or emphasis before the colon or closing bracket);
* ``decision``: the decision key (``判定:``) anywhere but on a decision line of its own
  (those are dropped from what is shown: the decision line never goes out);
* ``unstable``: the text still changes after :data:`MAX_NORMALISE_ROUNDS` rounds;
* ``empty``: nothing is left to show.

False positives (a correct answer that happens to use ``a < b > c`` or ``《》``) cost a
fallback message; a false negative leaks thinking. The rules choose the first.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote

from so8t_kedro.think.format import (
    DECISION_KEY,
    LANGUAGES,
    THINK_PARTS,
    THINK_TAGS,
    format_assistant,
)
from so8t_kedro.think.parser import has_section_header, parse_reply, without_decision_lines

#: Rounds of unescape + NFKC + removal before a text that still changes is withheld:
#: each round peels one layer of escaping, and no honest answer is escaped this deep.
MAX_NORMALISE_ROUNDS = 8

# Unicode's Default_Ignorable_Code_Point characters that are not category Cf (Python's
# unicodedata has no property lookup): the Hangul fillers, the combining grapheme joiner,
# Khmer inherent vowels and the variation selectors. DerivedCoreProperties.txt.
_IGNORABLE_NOT_CF = frozenset(
    [0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0]
    + list(range(0x180B, 0x1810)) + list(range(0xFE00, 0xFE10))
    + list(range(0xE0100, 0xE01F0))
)
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Cs", "Co", "Cn"})
_KEPT_CONTROLS = frozenset("\n\t")


def _is_invisible(char: str) -> bool:
    return char not in _KEPT_CONTROLS and (
        unicodedata.category(char) in _INVISIBLE_CATEGORIES or ord(char) in _IGNORABLE_NOT_CF)


def strip_invisible(text: str) -> str:
    """``text`` with its line breaks made ``\\n`` and its invisible characters removed."""
    lines = "\n".join(text.splitlines())  # \r\n, \u2028, \x85 ... are line breaks too
    return "".join(char for char in lines if not _is_invisible(char))


def _fold(text: str) -> str:
    return strip_invisible(unicodedata.normalize("NFKC", html.unescape(text)))


_BACKSLASH_ESCAPE = re.compile(r"\\(?:u\{([0-9a-fA-F]{1,6})\}|u([0-9a-fA-F]{4})|"
                               r"x([0-9a-fA-F]{2})|U([0-9a-fA-F]{8}))")


def _unescape_backslashes(text: str) -> str:
    def char(match: re.Match) -> str:
        code = int(next(group for group in match.groups() if group), 16)
        return chr(code) if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else ""

    return _BACKSLASH_ESCAPE.sub(char, text)


def _decode(text: str) -> str:
    return _fold(_unescape_backslashes(unquote(text)))


def _fixed_point(step, text: str) -> str | None:
    for _ in range(MAX_NORMALISE_ROUNDS):
        folded = step(text)
        if folded == text:
            return text
        text = folded
    return None


def normalise(text: str) -> str | None:
    """HTML-unescaped, NFKC, invisible characters removed, until stable; ``None`` when it
    does not settle within :data:`MAX_NORMALISE_ROUNDS` rounds."""
    return _fixed_point(_fold, text)


# ----------------------------------------------------------------------- markup


def _angle_brackets() -> dict[int, str]:
    """Every angle-bracket-like character -> ``<`` or ``>``, from the character names:
    angle brackets and angle quotation marks (``〈 《 ‹ « ⟨ ❮``...), the modifier-letter
    arrowheads ``˂ ˃`` and anything named LESS-THAN / GREATER-THAN SIGN."""
    table: dict[int, str] = {}
    for code in range(0x30000):
        char = chr(code)
        name = unicodedata.name(char, "")
        bracket = (unicodedata.category(char) in ("Ps", "Pe", "Pi", "Pf") and "ANGLE" in name
                   or name.startswith("MODIFIER LETTER") and name.endswith("ARROWHEAD")
                   or name.endswith(("LESS-THAN SIGN", "GREATER-THAN SIGN")))
        if not bracket:
            continue
        if "LEFT" in name or "LESS-THAN" in name:
            table[code] = "<"
        elif "RIGHT" in name or "GREATER-THAN" in name:
            table[code] = ">"
    return table


_ANGLE_BRACKETS = _angle_brackets()  # a scan of the Unicode names: ~0.1 s, once
# A tag name starts: bracket, blanks, maybe / ! ?, blanks, a letter (or _): closed or not.
_TAG_START = re.compile(r"<\s*[/!?]?\s*[^\W\d]")
# Or brackets around a run holding a letter, digit or slash: <1-think>, </>, < x >.
_TAG_SPAN = re.compile(r"<[^<>\w/]*[\w/][^<>]*>")


def _looks_like_markup(view: str) -> bool:
    angled = view.translate(_ANGLE_BRACKETS)
    return bool(_TAG_START.search(angled) or _TAG_SPAN.search(angled))


# --------------------------------------------------------------------- thinking

# What may precede a thinking part's name on its line (list markers, numbering, quotes,
# emphasis, headings) and between the name and its colon (emphasis, blanks, brackets).
# Never across a line break: each line's lead is scanned once (no quadratic backtracking).
_LINE_LEAD = r"^(?:[^\S\n]|[#>*_~\-+•・.()\[\]【】「『0-9])*"
# The name ends at a colon, or at a closing bracket that labels what follows ("[思考] ...").
_NAME_TAIL = r"(?:[^\S\n]|[*_~])*(?::|[)\]】」』])"
# Words that name thinking itself, in both languages: a line labelled with one of them is
# thinking in any format a model may invent ("Thought: ...", "【推論】..."), so it is
# withheld like the format's own part names. "reason" / "理由" are left out: answers use them.
GENERIC_THINKING_LABELS = ("think", "thinking", "thought", "thoughts", "reasoning",
                           "rationale", "scratchpad", "chain of thought", "inner monologue",
                           "思考", "思考過程", "考え", "推論", "考察", "内省", "検討メモ")


def _words(name: str, *, blanks: bool) -> str:
    """A regex for ``name`` with any separator where it has a blank, ``-`` or ``_``:
    ``think-task`` also matches ``THINK_TASK``, ``think.task`` and ``thinktask``, and with
    ``blanks`` ``think task`` (not anywhere in running text: "I think task lists help")."""
    parts = [re.escape(part) for part in re.split(r"[\s\-_]+", name.strip()) if part]
    separator = r"[\s\-_.]*" if blanks else r"(?:\s*[\-_.]+\s*)?"
    return separator.join(parts)


def _thinking_patterns() -> tuple[re.Pattern, re.Pattern]:
    """(markers anywhere, thinking-part line starts), from the format's own rendering.

    A sections-format reply rendered with a placeholder in each thinking part shows the
    headers (lines without the placeholder) and each part's line start (what precedes
    the placeholder, e.g. ``1. 依頼の把握: ``), in every language.
    """
    placeholder = "\x00"
    headers: set[str] = set()
    step_names: set[str] = {*THINK_PARTS, *THINK_TAGS.values(), *GENERIC_THINKING_LABELS}
    for language in LANGUAGES:
        rendered = format_assistant(dict.fromkeys(THINK_PARTS, placeholder), "",
                                    "sections", language)
        for line in rendered.splitlines():
            lead = line.split(placeholder, 1)[0] if placeholder in line else line
            words = re.sub(_LINE_LEAD, "", lead).rstrip(" :")
            if not words:
                continue
            (step_names if placeholder in line else headers).add(words)
    # Longest first, so that an alternation prefers ``think-task`` over ``task``.
    anywhere = sorted({*headers, *THINK_TAGS.values()}, key=len, reverse=True)
    starts = sorted({name.casefold() for name in step_names}, key=len, reverse=True)
    return (
        re.compile("|".join(_words(name, blanks=False) for name in anywhere), re.IGNORECASE),
        re.compile(_LINE_LEAD + "(?:" + "|".join(_words(name, blanks=True) for name in starts)
                   + ")"
                   + _NAME_TAIL, re.IGNORECASE | re.MULTILINE),
    )


_ANYWHERE, _LINE_STARTS = _thinking_patterns()
_DECISION_KEY = re.compile(re.escape(DECISION_KEY) + r"\s*:")


def withheld_reason(text: str) -> str | None:
    """Why ``text`` (a final part, its decision lines included) may not be shown, or
    ``None`` when it may. See the module docstring for the rules."""
    shown = normalise(text)
    decoded = _fixed_point(_decode, text)
    if shown is None or decoded is None:
        return "unstable"
    for view in (shown, decoded):
        if _looks_like_markup(view):
            return "markup"
        body = without_decision_lines(view)
        if _ANYWHERE.search(body) or _LINE_STARTS.search(body) or has_section_header(body):
            return "thinking"
        if _DECISION_KEY.search(body):
            return "decision"
    if not without_decision_lines(shown).strip():
        return "empty"
    return None


@dataclass(frozen=True)
class Disclosure:
    """What of a candidate final part may be shown: ``answer`` (the final without its
    decision lines and invisible characters) or ``None`` with ``reason``."""

    answer: str | None
    reason: str | None


def disclose(final: str) -> Disclosure:
    """Apply the rules to a candidate final part (``ParsedReply.final``)."""
    reason = withheld_reason(final)
    if reason is not None:
        return Disclosure(None, reason)
    return Disclosure(without_decision_lines(strip_invisible(final)).strip(), None)


def extract_final(text: str, *, prompt: str | None = None) -> str:
    """The user-visible final part of a reply; never any thinking text ("" when unsure):
    the parser's final part if :func:`withheld_reason` lets it out, without invisible
    characters."""
    final = parse_reply(text, prompt=prompt).final
    return "" if withheld_reason(final) else strip_invisible(final).strip()
