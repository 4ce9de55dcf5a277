"""Text normalisation of request records: NFKC, whitespace, and the language of a text."""

from __future__ import annotations

import re
import unicodedata

_CONTROL_RE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u200b-\u200d\u2060\ufeff]")
_NEWLINE_RE = re.compile("\r\n?|[\x85\u2028\u2029]")
_HSPACE_RE = re.compile(r"[^\S\n]+")
_SPACE_AROUND_NEWLINE_RE = re.compile(r" ?\n ?")
_MANY_NEWLINES_RE = re.compile(r"\n{3,}")
_JA_RE = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]")


def normalise_text(text: str) -> str:
    """NFKC-normalise and tidy whitespace, keeping paragraph structure.

    Control and zero-width characters are removed, line endings become ``\\n``, runs of
    other whitespace become one space, lines are stripped, more than one blank line in
    a row becomes one, and the result is stripped.
    """
    text = unicodedata.normalize("NFKC", text)
    text = _CONTROL_RE.sub("", text)
    text = _NEWLINE_RE.sub("\n", text)
    text = _HSPACE_RE.sub(" ", text)
    if "\n" in text:
        text = _SPACE_AROUND_NEWLINE_RE.sub("\n", text)
        text = _MANY_NEWLINES_RE.sub("\n\n", text)
    return text.strip()


def detect_language(text: str) -> str:
    """``"ja"`` if the text has any hiragana, katakana or CJK ideograph, else ``"en"``."""
    return "ja" if _JA_RE.search(text) else "en"
