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
