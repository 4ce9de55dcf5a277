"""Text helpers shared by the PII configuration and recognisers: the ``{{name}}``
word-list expansion of configured regexes, and Sudachi (SudachiPy + SudachiDict-core,
installed with ja-ginza): the dictionary and tokenizer loaded once, and tokens matched by
part of speech and surface."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import regex

# Sudachi's part of speech of a person name (人名: 姓, 名, 一般).
_PERSON_NAME_POS = regex.compile(r"^名詞-固有名詞-人名")


def _expand_words(pattern: str, words: Mapping[str, Sequence[str]]) -> str:
    """A regex with every {{name}} replaced by the alternation of words[name] (escaped)."""
    return regex.sub(
        r"\{\{(\w+)\}\}", lambda m: "|".join(map(regex.escape, words[m.group(1)])), pattern
    )


@functools.cache
def _sudachi_dictionary() -> Any:
    """SudachiDict-core, loaded once for every rule that tokenises."""
    import sudachipy  # only with a Japanese rule configured

    return sudachipy.Dictionary(dict="core")


@functools.cache
def _sudachi_tokenizer() -> Any:
    """A split-mode C tokenizer of that dictionary, for the validators."""
    import sudachipy

    return _sudachi_dictionary().create(sudachipy.SplitMode.C)


class _SudachiTokens:
    """Tokens whose Sudachi part of speech (e.g. 名詞-固有名詞-人名-姓) and surface both
    match a regex: SudachiPy + SudachiDict-core (installed with ja-ginza) tokenise ~50x
    faster than the named-entity model runs."""

    def __init__(self, pos_pattern: str, surface_pattern: str):
        import sudachipy

        self._dictionary = _sudachi_dictionary()
        pattern, self._surface = regex.compile(pos_pattern), regex.compile(surface_pattern)
        self._matches = self._dictionary.pos_matcher(
            lambda pos: bool(pattern.search("-".join(pos)))
        )
        self._tokenizer = self._dictionary.create(sudachipy.SplitMode.C)

    def spans(self, text: str) -> list[tuple[int, int]]:
        """The ``(start, end)`` of every matching token."""
        return [(token.begin(), token.end()) for token in self.tokenize(text)
                if self.matches(token)]

    def tokenize(self, text: str) -> Any:
        """Sudachi's tokens of the text (split mode C)."""
        return self._tokenizer.tokenize(text)

    def matches(self, token: Any) -> bool:
        """Whether the token's part of speech and surface both match."""
        return bool(self._matches(token)) and self.surface_matches(token.surface())

    def surface_matches(self, surface: str) -> bool:
        """Whether a surface matches the surface pattern (of any part of speech)."""
        return self._surface.search(surface) is not None

    def listed_as(self, surface: str, pos_pattern: regex.Pattern) -> bool:
        """Whether the dictionary has an entry for exactly this word whose part of
        speech matches (松本 is listed as a place and as a surname)."""
        return any(
            m.surface() == surface and pos_pattern.search("-".join(m.part_of_speech()))
            for m in self._dictionary.lookup(surface)
        )


# Hepburn romanisation of hiragana (a standard, not a tunable list): what a kana given
# name is looked up by in the romaji given-name list (ゆうこ -> yuuko, folded to yuko).
_HEPBURN = {
    "あ": "a", "い": "i", "う": "u", "え": "e", "お": "o",
    "か": "ka", "き": "ki", "く": "ku", "け": "ke", "こ": "ko",
    "さ": "sa", "し": "shi", "す": "su", "せ": "se", "そ": "so",
    "た": "ta", "ち": "chi", "つ": "tsu", "て": "te", "と": "to",
    "な": "na", "に": "ni", "ぬ": "nu", "ね": "ne", "の": "no",
    "は": "ha", "ひ": "hi", "ふ": "fu", "へ": "he", "ほ": "ho",
    "ま": "ma", "み": "mi", "む": "mu", "め": "me", "も": "mo",
    "や": "ya", "ゆ": "yu", "よ": "yo", "ら": "ra", "り": "ri",
    "る": "ru", "れ": "re", "ろ": "ro", "わ": "wa", "を": "o",
    "ん": "n", "が": "ga", "ぎ": "gi", "ぐ": "gu", "げ": "ge",
    "ご": "go", "ざ": "za", "じ": "ji", "ず": "zu", "ぜ": "ze",
    "ぞ": "zo", "だ": "da", "ぢ": "ji", "づ": "zu", "で": "de",
    "ど": "do", "ば": "ba", "び": "bi", "ぶ": "bu", "べ": "be",
    "ぼ": "bo", "ぱ": "pa", "ぴ": "pi", "ぷ": "pu", "ぺ": "pe",
    "ぽ": "po", "ぁ": "a", "ぃ": "i", "ぅ": "u", "ぇ": "e",
    "ぉ": "o",
}
_SMALL_Y = {"ゃ": "a", "ゅ": "u", "ょ": "o"}


def hiragana_romaji(kana: str) -> str | None:
    """Hepburn romaji of a hiragana word (りょうへい -> ryouhei, ちなつ -> chinatsu,
    はっと -> hatto), long vowels as typed; None for a word it cannot read."""
    out = ""
    double = False
    for ch in kana:
        if ch in _SMALL_Y:
            if not out.endswith("i") or len(out) < 2:
                return None
            stem = out[:-1]
            out = stem + ("" if stem.endswith(("sh", "ch", "j")) else "y") + _SMALL_Y[ch]
            continue
        if ch == "っ":
            double = True
            continue
        if ch == "ー":
            if not out:
                return None
            out += out[-1]
            continue
        syllable = _HEPBURN.get(ch)
        if syllable is None:
            return None
        if double:
            syllable = ("t" if syllable.startswith("ch") else syllable[0]) + syllable
            double = False
        out += syllable
    return None if double else out


def folded_romaji(romaji: str) -> str:
    """Romaji with long vowels folded, so that the spellings people type meet (Yuuko,
    Yuko; Shouta, Shota, Shohta; Oono, Ohno)."""
    word = romaji.lower()
    word = regex.sub(r"oh(?![aeiouy])", "o", word)
    return regex.sub(r"ou|oo", "o", word).replace("uu", "u")
