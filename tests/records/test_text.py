"""Text normalisation: NFKC, whitespace and language (dedup key: test_near_duplicates.py,
PII: test_pii.py)."""

from __future__ import annotations

import pytest

from so8t_kedro.records.text import detect_language, normalise_text

# ------------------------------------------------------------------ normalise_text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ｔｅｓｔ１２３", "test123"),  # full-width ASCII
        ("ｶﾀｶﾅ", "カタカナ"),  # half-width katakana
        ("①②", "12"),  # circled digits
        ("㍻", "平成"),  # square era name
        ("ﬁle", "file"),  # ligature
        ("ＡＢＣ！？", "ABC!?"),
        ("Ｔｅｌ：０９０", "Tel:090"),
        ("e\u0301", "\u00e9"),  # composed
    ],
)
def test_normalise_text_applies_nfkc(raw, expected):
    assert normalise_text(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  a \t b  ", "a b"),
        ("a\u3000\u3000b", "a b"),  # ideographic spaces
        ("a\u00a0b", "a b"),  # no-break space
        ("a\r\nb\rc", "a\nb\nc"),  # CRLF and CR
        ("a  \n  b", "a\nb"),  # spaces around a newline
        ("a\n\n\n\n\nb", "a\n\nb"),  # at most one blank line
        ("a\u2028b", "a\nb"),  # line separator
        ("a\u200bb\u200d", "ab"),  # zero-width characters
        ("\ufeffhello", "hello"),  # stray BOM
        ("a\x00b\x07c\x1b", "abc"),  # control characters
        ("\n\t  \n", ""),
    ],
)
def test_normalise_text_collapses_whitespace_and_controls(raw, expected):
    assert normalise_text(raw) == expected


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("こんにちは", "ja"),
        ("カタカナだけ", "ja"),
        ("漢字", "ja"),
        ("Please explain 東京", "ja"),
        ("hello world", "en"),
        ("Ünïcödé façade", "en"),
        ("12345 !?", "en"),
    ],
)
def test_detect_language(text, language):
    assert detect_language(text) == language
