"""Person-name recognisers: the named-entity model's (``pii.ner``, each name confirmed by
a Sudachi dictionary name), Japanese names before an honorific, after a relation word and
の, and with kana given names (``pii.honorific_names``), hiragana given names by their cue
(``pii.kana_given_names``), and English "<given name>
<Surname>" pairs from given-name lists (``pii.given_name_pairs``)."""

from __future__ import annotations

import functools
import importlib.resources
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any

import regex
from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.predefined_recognizers import SpacyRecognizer

from so8t_kedro.records.pii.config import (
    GivenNamePairsConfig,
    HonorificNamesConfig,
    KanaGivenNamesConfig,
    NerConfig,
    PackageNamesConfig,
)
from so8t_kedro.records.pii.patterns import (
    _dictionary_entries,
    ja_name_not_common_noun,
    listed_as_common_noun,
    unknown_word_or_name,
)
from so8t_kedro.records.pii.text import (
    _PERSON_NAME_POS,
    _expand_words,
    _SudachiTokens,
    folded_romaji,
    hiragana_romaji,
)


class _NerRecognizer(SpacyRecognizer):
    """Presidio's spaCy recogniser, dropping entities that match ``ner.reject`` and, with
    ``confirm``, those that overlap none of the tokens it finds."""

    def __init__(self, language: str, config: NerConfig, confirm: _SudachiTokens | None):
        super().__init__(
            supported_language=language,
            supported_entities=sorted(set(config.labels.values())),
            ner_strength=config.score,
        )
        self._reject = regex.compile(config.reject)
        self._confirm = confirm
        self._extend_if = regex.compile(config.extend_if) if config.extend_if else None
        self._extend_over = regex.compile(config.extend_over) if config.extend_over else None
        self._trim_end = regex.compile(f"(?:{config.trim_end})$") if config.trim_end else None
        self._full_name = (_SudachiTokens(config.full_name_pos[0], config.full_name_surface),
                           _SudachiTokens(config.full_name_pos[1], config.full_name_surface)
                           ) if config.full_name_pos else None

    def _extended(self, text: str, result: RecognizerResult) -> RecognizerResult:
        """The entity carried over the rest of a name it was cut from (``ner.extend_*``)."""
        if self._extend_if is None or self._extend_over is None:
            return result
        if not self._extend_if.fullmatch(text[result.start : result.end]):
            return result
        more = self._extend_over.match(text, result.end)
        if more is not None:
            result.end = more.end()
        return result

    def _full_names(self, text: str) -> list[RecognizerResult]:
        """A surname and a given name the dictionary lists, one right after the other
        (東浦 + 徳治 in 東浦徳治という人): a full name, where the model saw none."""
        if self._full_name is None or "PERSON" not in self.supported_entities:
            return []
        surname, given = self._full_name
        tokens = surname.tokenize(text)
        return [RecognizerResult("PERSON", tokens[i].begin(), tokens[i + 1].end(),
                                 self.ner_strength)
                for i in range(len(tokens) - 1)
                if surname.matches(tokens[i]) and given.matches(tokens[i + 1])]

    def _trimmed(self, text: str, result: RecognizerResult) -> RecognizerResult:
        """The entity without a ``ner.trim_end`` word it ends in (木下 直通 -> 木下)."""
        if self._trim_end is not None:
            cut = self._trim_end.search(text, result.start, result.end)
            if cut is not None and cut.start() > result.start:
                result.end = cut.start()
        return result

    def analyze(self, text, entities, nlp_artifacts=None):
        found = (_within_first_line(text, r)
                 for r in super().analyze(text, entities, nlp_artifacts))
        results = [self._trimmed(text, r) for r in found
                   if r is not None and not self._reject.search(text[r.start : r.end])]
        full_names = self._full_names(text) if "PERSON" in entities else []
        if self._confirm is None or not results:
            return [self._extended(text, r) for r in results] + full_names
        names = self._confirm.spans(text)
        return [self._extended(text, r) for r in results
                if any(r.start < end and start < r.end for start, end in names)] + full_names


def _free(start: int, end: int, taken: list[tuple[int, int]]) -> bool:
    """Whether ``start:end`` overlaps none of the ``taken`` spans."""
    return all(end <= taken_start or taken_end <= start for taken_start, taken_end in taken)


def _listed_beside(
    persons: list[RecognizerResult],
    neighbours: Callable[[RecognizerResult], tuple[tuple[int, int] | None, ...]],
) -> list[RecognizerResult]:
    """The persons listed beside ``persons``, walking along the list: ``neighbours`` gives
    the spans of the names right after and before a person (None where there is none)."""
    found: list[RecognizerResult] = []
    taken = {(p.start, p.end) for p in persons}
    frontier = list(persons)
    while frontier:
        person = frontier.pop()
        for span in neighbours(person):
            if span is not None and span not in taken:
                taken.add(span)
                neighbour = RecognizerResult("PERSON", *span, person.score)
                found.append(neighbour)
                frontier.append(neighbour)
    return found


def _within_first_line(text: str, result: RecognizerResult) -> RecognizerResult | None:
    """The model's entity cut at its first line break (it read グエン・ヴァン・アン and the
    next line's 五十音順 as one name): no entity spans two lines. None if nothing is left."""
    line_break = text.find("\n", result.start, result.end)
    if line_break == -1:
        return result
    end = line_break
    while end > result.start and text[end - 1].isspace():
        end -= 1
    if end == result.start:
        return None
    result.end = end
    return result


class _HonorificNameRecognizer(EntityRecognizer):
    """Person names Sudachi finds right before a personal honorific (松本 in 松本先生):
    ``pii.honorific_names``."""

    def __init__(self, config: HonorificNamesConfig, language: str):
        super().__init__(
            supported_entities=["PERSON"], name=f"honorific_names_{language}",
            supported_language=language,
        )
        self._tokens = _SudachiTokens(config.pos, config.surface)
        self._place = regex.compile(config.place_pos)
        self._person = regex.compile(config.also_listed_as)
        self._common_noun = regex.compile(config.common_noun_pos)
        self._surname = regex.compile(config.listed_as_surname)
        self._min_length = config.common_noun_min_length
        self._role_nouns = frozenset(config.role_nouns)
        self._honorifics = frozenset(config.honorifics)
        self._score = config.score
        self._given_surface = (regex.compile(config.given_name_surface)
                               if config.given_name_surface else None)
        self._given_pos = regex.compile(config.given_name_pos or "")
        self._relations = frozenset(config.relation_nouns)
        self._after_relation_name = frozenset(config.relation_name_followed_by_pos)
        self._surname_alone = config.relation_surname_alone
        self._unlisted_proper = (regex.compile(config.relation_unlisted_proper_noun_pos)
                                 if config.relation_unlisted_proper_noun_pos else None)
        self._relation_kana_run = config.relation_kana_run
        self._given_name_alone = (regex.compile(config.given_name_alone_pos)
                                  if config.given_name_alone_pos else None)
        self._vocatives = frozenset(config.vocatives)
        self._cut_hiragana_name = config.cut_hiragana_given_name
        self._acted_on = tuple(config.given_name_acted_on)
        self._unlisted_honorifics = frozenset(config.unlisted_proper_noun_honorifics)
        honorifics = sorted(config.honorifics, key=len, reverse=True)
        self._kana_run = (regex.compile(
            f"(?:{config.kana_run_surface})(?=" + "|".join(map(regex.escape, honorifics)) + ")")
            if config.kana_run_surface else None)
        self._kana_run_not = regex.compile(config.kana_run_not) if config.kana_run_not else None
        screen = (list(config.honorifics) + [f"{word}の" for word in config.relation_nouns]
                  + [f"{word}、" for word in config.vocatives] + list(config.given_name_acted_on))
        self._screen = regex.compile("|".join(map(regex.escape, screen)))

    def load(self) -> None:
        """Nothing to load: the tokenizer is built in ``__init__``."""

    def may_match(self, text: str) -> bool:
        """Whether an honorific or a relation word and の occurs at all (the tokenizer
        runs only then)."""
        return self._screen.search(text) is not None

    def _is_name(self, token: Any) -> bool:
        """A person name, or a place name the dictionary also lists as a person name
        (松本先生; not 京都さん)."""
        if not self._place.search("-".join(token.part_of_speech())):
            return True
        return self._tokens.listed_as(token.surface(), self._person)

    def _is_surname_read_as_noun(self, tokens: Any, i: int) -> bool:
        """A kanji common noun that the dictionary also lists as a surname, with no
        prefix before it (平野先生, 桑原様; not お客様, and not a one-character word)."""
        token = tokens[i]
        surface = token.surface()
        if (len(surface) < self._min_length or not self._tokens.surface_matches(surface)
                or not self._common_noun.search("-".join(token.part_of_speech()))):
            return False
        if i > 0 and tokens[i - 1].part_of_speech()[0] == "接頭辞":
            return False
        return self._tokens.listed_as(surface, self._surname)

    def _is_unlisted_surname_before(self, tokens: Any, i: int) -> bool:
        """A surname the dictionary lacks, 2-3 kanji tagged as a general proper noun
        (``relation_unlisted_proper_noun_pos``: 久保田), right before an honorific of
        ``unlisted_proper_noun_honorifics`` (久保田くん; not 東大さん, 阪神さん: firms
        take さん and 様, not くん or ちゃん)."""
        token = tokens[i]
        return (self._unlisted_proper is not None
                and tokens[i + 1].surface() in self._unlisted_honorifics
                and regex.fullmatch(r"[\p{Han}々]{2,3}", token.surface()) is not None
                and self._unlisted_proper.search("-".join(token.part_of_speech())) is not None)

    def _kana_run_end(self, text: str, token: Any) -> int | None:
        """Where a kana given name ends that follows a surname in the text right before
        an honorific, however Sudachi cut it (工藤 + りこ + ちゃん, 安田 + そうた + くん):
        the surname a kanji word the dictionary lists as one (not a role noun)."""
        if self._kana_run is None:
            return None
        surface = token.surface()
        if (surface in self._role_nouns or not self._tokens.surface_matches(surface)
                or not self._tokens.listed_as(surface, self._surname)):
            return None
        run = self._kana_run.match(text, token.end())
        if run is None or (self._kana_run_not is not None
                           and self._kana_run_not.search(run.group()) is not None):
            return None
        return run.end()

    def analyze(self, text, entities, nlp_artifacts=None):
        tokens = self._tokens.tokenize(text)
        results = []
        for i in range(len(tokens) - 1):
            token = tokens[i]
            end = self._name_end(tokens, i)
            if end is None:
                end = self._kana_run_end(text, token)
                if end is not None:
                    results.append(RecognizerResult("PERSON", token.begin(), end, self._score))
                continue
            if token.surface() in self._role_nouns:
                continue
            if ((self._tokens.matches(token) and self._is_name(token))
                    or self._is_surname_read_as_noun(tokens, i)
                    or self._is_unlisted_surname_before(tokens, i)):
                results.append(RecognizerResult("PERSON", token.begin(), end, self._score))
        for i in range(2, len(tokens)):
            end = self._relation_then_name(tokens, i)
            if end is not None:
                results.append(RecognizerResult("PERSON", tokens[i].begin(), end, self._score))
        for i in range(len(tokens)):
            if self._called_or_acted_on(text, tokens, i):
                results.append(RecognizerResult(
                    "PERSON", tokens[i].begin(), tokens[i].end(), self._score))
        return results

    def _is_given_name_alone(self, token: Any) -> bool:
        """A token the dictionary reads as a given name (``given_name_alone_pos``)."""
        return (self._given_name_alone is not None
                and self._given_name_alone.search("-".join(token.part_of_speech())) is not None)

    def _called_or_acted_on(self, text: str, tokens: Any, i: int) -> bool:
        """A given name alone that is called (ねえ、みさきって: a vocative and a comma
        before it, a particle or a mark after it) or acted on (ケイトに渡す)."""
        if not self._is_given_name_alone(tokens[i]):
            return False
        called = (i >= 2 and tokens[i - 1].surface() in ("、", ",")
                  and tokens[i - 2].surface() in self._vocatives
                  and self._followed_by_particle(tokens, i + 1))
        return called or text.startswith(self._acted_on, tokens[i].end())

    def _is_kana_given_name(self, token: Any) -> bool:
        """A given name in kana (ひなた, ここ) or one kanji (蒼) as the configuration
        describes it."""
        return (self._given_surface is not None
                and self._given_surface.search(token.surface()) is not None
                and self._given_pos.search("-".join(token.part_of_speech())) is not None)

    def _relation_then_name(self, tokens: Any, i: int) -> int | None:
        """Where the name ends that starts at token i after a relation word and の: a
        kanji word the dictionary lists as a surname and a kana given name, then a
        particle or the end, no honorific needed (同級生の宮崎あかりに); a given name
        alone in any script (孫の陽葵と, 娘のエミリーが: ``given_name_alone_pos``) or a
        hiragana name the dictionary cuts into nouns (娘のひまりが: ひ + まり); with
        ``relation_surname_alone``, also a proper noun of two or more kanji listed as a
        surname before a particle or a punctuation mark (元上司の吉岡に). None otherwise."""
        if (not self._relations or tokens[i - 1].surface() != "の"
                or tokens[i - 2].surface() not in self._relations):
            return None
        if self._is_given_name_alone(tokens[i]) and self._followed_by_particle(tokens, i + 1):
            return tokens[i].end()
        cut_end = self._cut_hiragana_name_end(tokens, i)
        if cut_end is not None:
            return cut_end
        surface = tokens[i].surface()
        if surface in self._role_nouns or not self._tokens.surface_matches(surface):
            return None
        if not self._tokens.listed_as(surface, self._surname):
            split_end = self._split_surname_run_end(tokens, i)
            if split_end is not None:
                return split_end
            return self._unlisted_surname_end(tokens, i)
        run_end = self._kana_given_name_run_end(tokens, i)
        if run_end is not None:
            return run_end
        if i + 1 < len(tokens) and self._is_kana_given_name(tokens[i + 1]):
            if (i + 2 >= len(tokens)
                    or tokens[i + 2].part_of_speech()[0] in self._after_relation_name):
                return tokens[i + 1].end()
            return None
        # A surname alone: read as a name, or as a common noun the dictionary also lists
        # as a surname (元カノの真壁が, 彼氏の帯刀が: 真壁 "a wall", 帯刀 "wearing a sword")
        # unless の follows it, which reads it as the friend's thing (友達の新居の住所).
        if (self._surname_alone and len(surface) >= 2
                and i + 1 < len(tokens)
                and (self._tokens.matches(tokens[i])
                     or (self._is_surname_read_as_noun(tokens, i)
                         and tokens[i + 1].surface() != "の"))
                and tokens[i + 1].part_of_speech()[0] in self._after_relation_name):
            return tokens[i].end()
        return self._unlisted_surname_end(tokens, i)

    def _cut_hiragana_name_end(self, tokens: Any, i: int) -> int | None:
        """A hiragana given name that the dictionary knows as no word, cut into two or
        more nouns (ひ + まり), 2-4 kana in all, then a particle: where it ends. A word
        it knows (おむつ, こと) is one token and no name."""
        if not self._cut_hiragana_name:
            return None
        kana = ""
        for j in range(i, min(i + 4, len(tokens))):
            kana += tokens[j].surface()
            if (tokens[j].part_of_speech()[0] != "名詞"
                    or not regex.fullmatch(r"\p{Hiragana}{1,4}", kana)):
                return None
            if (j > i and j + 1 < len(tokens)
                    and tokens[j + 1].part_of_speech()[0] == "助詞"):
                return tokens[j].end()
        return None

    def _split_surname_run_end(self, tokens: Any, i: int) -> int | None:
        """A surname Sudachi cut in two kanji words (皆 + 川 in 幼なじみの皆川ことねに),
        listed as a surname when joined, then a kana given name: where the name ends."""
        if i + 2 >= len(tokens):
            return None
        joined = tokens[i].surface() + tokens[i + 1].surface()
        if (not self._tokens.surface_matches(tokens[i + 1].surface())
                or not regex.fullmatch(r"[\p{Han}々]{2,4}", joined)
                or not self._tokens.listed_as(joined, self._surname)):
            return None
        return self._kana_given_name_run_end(tokens, i + 1)

    def _followed_by_particle(self, tokens: Any, j: int) -> bool:
        """Whether token j is a particle or a mark (``relation_name_followed_by_pos``),
        or the text ends before it."""
        return j >= len(tokens) or tokens[j].part_of_speech()[0] in self._after_relation_name

    def _unlisted_surname_end(self, tokens: Any, i: int) -> int | None:
        """A surname the tokenizer does not read as a name after a relation word and の:
        2-3 kanji it tags as a proper noun of ``relation_unlisted_proper_noun_pos`` (鰐淵
        in 同僚の鰐淵が, 固有名詞-一般), before a particle or a mark."""
        token = tokens[i]
        if (self._unlisted_proper is None or not 2 <= len(token.surface()) <= 3
                or not self._unlisted_proper.search("-".join(token.part_of_speech()))
                or i + 1 >= len(tokens) or not self._followed_by_particle(tokens, i + 1)):
            return None
        return token.end()

    def _kana_given_name_run_end(self, tokens: Any, i: int) -> int | None:
        """After a surname at token i, a kana given name Sudachi cut into other words
        (今泉 + は + るき): 2-4 kana of whole tokens, the last a noun, the first not a
        copula or a particle run (``kana_run_not``), then a particle, a mark or the end."""
        if not self._relation_kana_run or self._kana_run_not is None:
            return None
        kana = ""
        for j in range(i + 1, min(i + 5, len(tokens))):
            kana += tokens[j].surface()
            if not regex.fullmatch(r"[\p{Hiragana}\p{Katakana}ー]{1,4}", kana):
                return None
            pos = tokens[j].part_of_speech()
            if (len(kana) >= 2 and pos[0] == "名詞"
                    and (pos[1] == "固有名詞" or regex.fullmatch(r"\p{Hiragana}+", kana))
                    and self._followed_by_particle(tokens, j + 1)
                    and self._kana_run_not.search(kana) is None):
                return self._name_final_kana_end(tokens, j, len(kana))
        return None

    def _name_final_kana_end(self, tokens: Any, j: int, length: int) -> int:
        """The end of a kana given name at token j, carried over a one-kana particle
        that another particle follows at once: two particles in a row do not occur,
        so the first is the name's last kana (小野寺ゆず + は + が, 皆川こと + ね + に)."""
        if (length < 4 and j + 2 < len(tokens)
                and len(tokens[j + 1].surface()) == 1
                and tokens[j + 1].part_of_speech()[0] == "助詞"
                and tokens[j + 2].part_of_speech()[:2] == ("助詞", "格助詞")):
            return tokens[j + 1].end()
        return tokens[j].end()

    def _name_end(self, tokens: Any, i: int) -> int | None:
        """Where the name that starts at token i ends when an honorific follows it at
        once, or after a given name in kana (中野ひなたちゃん); None when none follows."""
        if tokens[i + 1].surface() in self._honorifics:
            return tokens[i].end()
        if (i + 2 < len(tokens) and tokens[i + 2].surface() in self._honorifics
                and self._is_kana_given_name(tokens[i + 1])):
            return tokens[i + 1].end()
        # A kana given name that Sudachi split in two (はる+と in 安藤はるとくん, ゆう+ま
        # in 村井ゆうまくん): the first part a given name's part of speech, both together
        # a kana given name's surface.
        if (i + 3 < len(tokens) and tokens[i + 3].surface() in self._honorifics
                and self._is_kana_given_name(tokens[i + 1])
                and self._given_surface is not None
                and self._given_surface.search(tokens[i + 1].surface() + tokens[i + 2].surface())):
            return tokens[i + 2].end()
        return None


# A capitalised name of any Latin script, parts joined by hyphens (Zsófia, Dae-Hyun).
_CAPITALISED_NAME = regex.compile(r"\p{Lu}\p{Ll}+(?:-\p{Lu}\p{Ll}+)*")

# Kana that start no word (っき in さっき, ん, a small vowel): no given name starts so.
_NOT_A_WORD_START = regex.compile(r"[ぁぃぅぇぉゃゅょっんー]")


class _KanaGivenNames:
    """Whether hiragana is a given name: its romaji (Hepburn, long vowels folded: ゆうこ ->
    yuko) is on the romaji given-name list, or, with ``dictionary``, Sudachi lists exactly
    the kana as a given name (りょうへい; three kana or more: it lists many two-kana words
    as given names too, しん, せい); never kana that cannot start a word (っき) nor one of
    ``not_names``."""

    def __init__(self, config: KanaGivenNamesConfig):
        self._romaji = frozenset(folded_romaji(name) for name in config.romaji_given_names)
        self._dictionary_pos = regex.compile(config.dictionary_pos)
        self._not_names = frozenset(config.not_names)
        self._dictionary_min_length = config.dictionary_min_length

    def __call__(self, kana: str, dictionary: bool = True) -> bool:
        if kana in self._not_names or _NOT_A_WORD_START.match(kana):
            return False
        romaji = hiragana_romaji(kana)
        if romaji is not None and folded_romaji(romaji) in self._romaji:
            return True
        return (dictionary and len(kana) >= self._dictionary_min_length
                and self.listed_as_given_name(kana))

    def listed_as_given_name(self, word: str) -> bool:
        """Whether the dictionary lists exactly ``word`` (kana or kanji) as a given name."""
        return any(self._dictionary_pos.search("-".join(entry.part_of_speech()))
                   for entry in _dictionary_entries(word))


class _KanaGivenNameRecognizer(EntityRecognizer):
    """Hiragana given names where the words around them say a person, though Sudachi
    cuts them (帰りははるとママが: は + はると; DMでりょうへいくん): in each context's
    ``run`` the longest ending that is a given name (``pii.kana_given_names``)."""

    def __init__(self, config: KanaGivenNamesConfig, language: str,
                 is_given_name: _KanaGivenNames):
        super().__init__(supported_entities=["PERSON"], name=f"kana_given_names_{language}",
                         supported_language=language)
        self._is_given_name = is_given_name
        self._contexts = [(regex.compile(c.regex, regex.MULTILINE), c.whole, c.dictionary)
                          for c in config.contexts]
        self._lengths = range(config.max_length, config.min_length - 1, -1)
        self._score = config.score

    def load(self) -> None:
        """Nothing to load: the lists come with the configuration."""

    def _name_in(self, text: str, start: int, end: int, whole: bool,
                 dictionary: bool) -> tuple[int, int] | None:
        lengths = [end - start] if whole else self._lengths
        for length in lengths:
            begin = end - length
            # Not the word after an honorific prefix the run begins with (お + ひさ + さま).
            if begin < start or (begin == start + 1 and text[start] in "おご"):
                continue
            if self._is_given_name(text[begin:end], dictionary):
                # One kana left before it (after a particle) that is no particle belongs
                # to the name (の + ゆ + かりん + さん: ゆかりん, a nickname of かりん's shape).
                lead = start + (begin - start == 2 and text[start] in _PARTICLES_BEFORE_A_NAME)
                if begin == lead + 1 and text[lead] not in _PARTICLES_BEFORE_A_NAME:
                    begin = lead
                return begin, end
        return None

    def _spans(self, text: str) -> list[tuple[int, int]]:
        spans = []
        for context, whole, dictionary in self._contexts:
            for match in context.finditer(text):
                span = self._name_in(text, *match.span("run"), whole, dictionary)
                if span is not None:
                    spans.append(span)
        return spans

    def may_match(self, text: str) -> bool:
        return any(context.search(text) for context, _, _ in self._contexts)

    def analyze(self, text, entities, nlp_artifacts=None):
        return [RecognizerResult("PERSON", start, end, self._score)
                for start, end in self._spans(text)]


def package_given_names(config: PackageNamesConfig) -> frozenset[str]:
    """Given names of at least ``min_frequency`` in some country, from a package's
    ``nam_dict.txt`` (column 0-1 gender, 3-28 the name, 30- one frequency digit 1-D
    per country; UTF-8 in gender-guesser's copy, columns counted in characters).
    Capitalised names of any Latin script (José, Zsófia, Łukasz, Søren); a compound
    written Dae+Jung is taken hyphenated with both parts capitalised (Dae-Jung), as
    hyphenated given names are looked up (``_GivenNamePairRecognizer.is_given_name``).
    Read once per process: each language's recogniser asks for the same list."""
    return _read_package_names(config.package, config.file, config.min_frequency)


@functools.lru_cache(maxsize=4)
def _read_package_names(package: str, file: str, min_frequency: int) -> frozenset[str]:
    text = (importlib.resources.files(package) / file).read_bytes()
    names = set()
    for line in text.decode("utf-8").splitlines():
        if line.startswith(("#", "=")) or len(line) < 31:
            continue
        name = "-".join(part.capitalize() for part in line[3:29].strip().split("+"))
        if not _CAPITALISED_NAME.fullmatch(name):
            continue
        frequencies = [int(ch, 16) for ch in line[30:] if ch in "123456789ABCDabcd"]
        if frequencies and max(frequencies) >= min_frequency:
            names.add(name)
            folded = _ascii_folded(name)
            if _CAPITALISED_NAME.fullmatch(folded):
                names.add(folded)
    return frozenset(names)


# Letters NFKD does not decompose into a base letter and a mark.
_FOLDS = str.maketrans({"ø": "o", "Ø": "O", "æ": "ae", "Æ": "Ae", "œ": "oe", "Œ": "Oe",
                        "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "þ": "th",
                        "Þ": "Th", "ß": "ss", "ı": "i"})


# What separates the words of a whole name (HUANG/XIAOMING, Walsh, Brenda).
_NAME_WORD_SEPARATORS = regex.compile(r"[\s,/]+")


def _ascii_folded(name: str) -> str:
    """A name as typed without its diacritics (Søren -> Soren, José -> Jose, Łukasz ->
    Lukasz): people often write foreign names so."""
    decomposed = unicodedata.normalize("NFKD", name.translate(_FOLDS))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


class _GivenNamePairRecognizer(EntityRecognizer):
    """"<given name> <Surname>" where the first word is a known given name and neither
    word is an English stop word: ``pii.given_name_pairs``."""

    def __init__(self, config: GivenNamePairsConfig, language: str):
        super().__init__(
            supported_entities=["PERSON"], name=f"given_name_pairs_{language}",
            supported_language=language,
        )
        from spacy.lang.en.stop_words import STOP_WORDS

        stop_words = {word.capitalize() for word in STOP_WORDS}
        regional = {name for lists in (config.regional_names, config.more_regional_names)
                    for names in lists.values() for name in names}
        romaji = config.japanese_romaji
        # Japanese given names in romaji count alone too (Players: Ren, Kaito).
        romaji_given = set(romaji.given_names) if romaji else set()
        names = set(config.names) | regional | (
            (package_given_names(config.package_names) | romaji_given)
            - set(config.not_names) - stop_words
        )
        self._given_names = frozenset(names)
        # After a kin title a listed name counts even where the word is more often
        # something else (Grandma Rose, Uncle Chase): ``not_names`` do not apply there.
        self._names_after_kin = self._given_names | (
            package_given_names(config.package_names) - stop_words)
        self._stop_words = frozenset(stop_words)
        self._pair = regex.compile(_expand_words(config.regex, config.words))
        self._longer_name_before = regex.compile(config.longer_name_before)
        self._titles = frozenset(config.titles)
        self._alone_regexes = [regex.compile(_expand_words(form, config.words))
                               for form in config.alone_regex]
        self._alone_not = frozenset(config.alone_not)
        lone = config.lone_name
        self._lone = (regex.compile(lone.regex), regex.compile(lone.first_person),
                      frozenset(lone.not_names)) if lone else None
        self._romaji_surnames = frozenset(romaji.surnames) if romaji else frozenset()
        self._romaji_given = frozenset(romaji_given)
        self._score = config.score
        self._last: tuple[str, list[tuple[int, int]]] | None = None

    def load(self) -> None:
        """Nothing to load: the name list is read in ``__init__``."""

    def is_given_name(self, word: str) -> bool:
        """A given name on the lists; a hyphenated one (Dae-jung, Jan-Willem) when the
        whole, its parts capitalised, or its first part is one."""
        if word in self._given_names:
            return True
        if "-" not in word:
            return False
        first = word.split("-", 1)[0]
        whole = "-".join(part.capitalize() for part in word.split("-"))
        return whole in self._given_names or first in self._given_names

    def _ends_a_longer_name(self, text: str, start: int) -> bool:
        before = self._longer_name_before.search(text, 0, start)
        return before is not None and not (
            before["word"] in self._given_names or before["word"] in self._titles
        )

    def _pairs(self, text: str) -> Iterator[Any]:
        # overlapped: "Mr Oscar Lindgren" is tried as "Mr Oscar" and "Oscar Lindgren"
        for match in self._pair.finditer(text, overlapped=True):
            if (self.is_given_name(match["given"])
                    and match["surname"] not in self._stop_words
                    and not self._ends_a_longer_name(text, match.start())):
                yield match

    def _romaji_names(self, text: str) -> Iterator[tuple[int, int]]:
        """Spans of Japanese names in romaji: a surname and a given name of
        ``japanese_romaji``, in either order (Kimura Haruka, Yuto Maeda, SUZUKI HARUTO)."""
        if not self._romaji_surnames:
            return
        for match in _ROMAJI_PAIR.finditer(text, overlapped=True):
            first, second = (_SYLLABLE_APOSTROPHE.sub("", match[part]).title()
                             for part in ("first", "second"))
            if ((first in self._romaji_surnames and second in self._romaji_given)
                    or (first in self._romaji_given and second in self._romaji_surnames)):
                yield match.span()

    def _alone_names(self, text: str) -> Iterator[tuple[int, int]]:
        """Spans of given names alone in a request or an exchange (``alone_regex``); one
        typed in lower case (my coworker siobhan) is looked up capitalised; where the
        match names an ``other`` person beside it (between X and Y), that one must be a
        given name too. A ``whole`` name (HIRAOKA YUTA, Walsh, Brenda) is taken whole when
        one of its words is a given name and none a stop word or a title, or when a
        booking's title follows it (HUANG/XIAOMING MR)."""
        for match in (m for form in self._alone_regexes for m in form.finditer(text)):
            groups = match.groupdict()
            if groups.get("whole"):
                start, end = match.span("whole")
                words = [word.title() for word in _NAME_WORD_SEPARATORS.split(groups["whole"])
                         if word]
                titled = groups.get("titled")
                if len(words) > 2 and words[0] in self._titles:
                    # A title read as the whole's first word (, MRS KAVYA SHARMA): the
                    # name after it, titled.
                    start = _NAME_WORD_SEPARATORS.search(text, start, end).end()
                    words, titled = words[1:], words[0]
                if (not any(word in self._stop_words or word in self._titles for word in words)
                        and (titled or any(self.is_given_name_alone(word) for word in words))):
                    yield start, end
                continue
            if groups.get("kin"):
                if groups["given"] in self._names_after_kin and groups["given"] not in self._alone_not:
                    yield match.span("given")
                continue
            names = [groups["given"], *([groups["other"]] if groups.get("other") else [])]
            if all(self.is_given_name_alone(name) for name in names):
                yield match.span("given")
        yield from self._lone_names(text)

    def _lone_names(self, text: str) -> Iterator[tuple[int, int]]:
        """Spans of given names with no cue beside them (``lone_name``), in a text whose
        writer speaks in the first person."""
        if self._lone is None:
            return
        candidate, first_person, not_names = self._lone
        if first_person.search(text) is None:
            return
        for match in candidate.finditer(text):
            if match["given"] not in not_names and self.is_given_name_alone(match["given"]):
                yield match.span("given")

    def is_given_name_alone(self, word: str) -> bool:
        """A given name standing alone: on the lists and not a word of ``alone_not``
        (months, days)."""
        # Looked up capitalised: siobhan -> Siobhan, YUTA -> Yuta, ANNA-LENA -> Anna-Lena.
        word = word.title() if word.isupper() else word[:1].upper() + word[1:]
        return word not in self._alone_not and self.is_given_name(word)

    def _spans(self, text: str) -> list[tuple[int, int]]:
        """Every name span of the text; the last text's are kept, since the engine asks
        ``may_match`` and then ``analyze`` of the same text (the alone-name regexes are the
        slowest of the recognisers)."""
        last = self._last  # one read: another thread may replace it meanwhile
        if last is not None and last[0] == text:
            return last[1]
        spans = [match.span() for match in self._pairs(text)]
        spans += [span for names in (self._alone_names(text), self._romaji_names(text))
                  for span in names]
        self._last = (text, spans)
        return spans

    def may_match(self, text: str) -> bool:
        return bool(self._spans(text))

    def analyze(self, text, entities, nlp_artifacts=None):
        return [RecognizerResult("PERSON", start, end, self._score)
                for start, end in self._spans(text)]


# Two words, each capitalised or in capitals (Kimura Haruka, SUZUKI HARUTO), an
# apostrophe perhaps parting syllables (Shun'ichi), glued to Japanese text or not
# (ローマ字でKATO HARUKAです).
_ROMAJI_PAIR = regex.compile(
    r"(?<![\p{Latin}'’])(?P<first>\p{Lu}\p{Ll}{2,}(?:['’]\p{Ll}+)?|\p{Lu}{3,})"
    r" (?P<second>\p{Lu}\p{Ll}{2,}(?:['’]\p{Ll}+)?|\p{Lu}{3,})(?![\p{Latin}'’])")
_SYLLABLE_APOSTROPHE = regex.compile(r"['’]")
_KANJI_NAME = regex.compile(r"[\p{Han}々]{1,4}")
# A kanji word right before a kanji name, a space between or none (柏木 + 遥斗, 東雲 +
# 遥斗: the model read only the given name).
_KANJI_WORD_BEFORE = regex.compile(r"(?<![\p{Han}々])[\p{Han}々]{1,3}[ 　]?$")
_LATIN_NAME_END = regex.compile(r"\p{Latin}$")
# What follows a given name after its surname: an honorific, a particle, a mark or a space.
_AFTER_GIVEN_NAME = r"(?=さん|様|くん|君|ちゃん|の|が|は|を|に|と|[、。,)）(（」』]|\s|$)"
# A kana given name a space after a kanji surname (安藤 + こころ, 後藤 + ひなた。).
_KANA_GIVEN_AFTER = regex.compile(r"[ 　]\p{Hiragana}{2,4}" + _AFTER_GIVEN_NAME)
# A kanji given name a space after a kanji surname the model read alone (青木 + 陸斗の).
_KANJI_GIVEN_AFTER = regex.compile(r"[ 　][\p{Han}々]{1,3}" + _AFTER_GIVEN_NAME)
# A name's reading or other script in parentheses after it, an honorific perhaps between
# (see _PersonJoiner.around_private_persons).
_NAME_READING = regex.compile(
    r"(?:さん|様|さま|くん|ちゃん|氏)? ?[(（](?P<reading>[\p{Hiragana}\p{Katakana}ー]{2,8}(?:[ 　・][\p{Hiragana}\p{Katakana}ー]{1,8})?"
    r"|\p{Hangul}{2,4}|\p{Lu}\p{Ll}*(?:[ -]\p{Lu}?\p{Ll}+){1,2}|\p{Cyrillic}+(?: \p{Cyrillic}+){1,2})[)）]")
# Particles that may end a run of hiragana before a name (DMで + りょうへい).
_PARTICLES_BEFORE_A_NAME = frozenset("のはがをにともでへやおご")
_HAS_KANJI = regex.compile(r"[\p{Han}々]")
_KANA = regex.compile(r"[\p{Hiragana}\p{Katakana}ー 　・]+")
# One kanji of a given name in parentheses after a surname (高橋(晴)).
_GIVEN_NAME_NOTE = regex.compile(r"[(（](?P<kanji>\p{Han})[)）]")
# The rest of a name whose part was read as a person: katakana parts joined by ・ or =
# (ニコラス + ・ペトロフ, エリカ・ロペス・鈴木 whose last part may be a kanji surname),
# a quoted nickname and the surname after a Latin given name (Oluwaseun "Seun" Bakare),
# a generation suffix (Walter Brennan Jr.).
_PARTS_AFTER_KATAKANA = regex.compile(
    r"(?:[・=][\p{Katakana}ー]{2,12})+(?:・[\p{Han}々]{1,3}(?![\p{Han}々]))?"
    r"|・[\p{Han}々]{1,3}(?![\p{Han}々])")
_PARTS_BEFORE_KATAKANA = regex.compile(r"(?<![\p{Katakana}ー])(?:[\p{Katakana}ー]{2,12}[・=])+$")
_NICKNAME_AND_SURNAME = regex.compile(r" [\"'“‘]\p{Lu}\p{Ll}+[\"'”’] \p{Lu}\p{Ll}+(?:-\p{Lu}\p{Ll}+)?")
_GENERATION_SUFFIX = regex.compile(r"(?<=\b(?:Jr|Sr))\.|,? (?:Jr|Sr)\.?(?![\p{L}])|,? (?:II|III|IV)(?![\p{L}])")
# Between the parts of a name (ささき ゆうと, グエン・ヴァン・アン): its other mentions are
# looked for part by part too.
_NAME_PART_SEPARATORS = regex.compile(r"[\s・=]+")


@functools.lru_cache(maxsize=4096)  # per name, not per text: it asks the dictionary
def _mention_pattern(name: str, titles: str) -> regex.Pattern | None:
    """How another mention of ``name`` is found (see ``_PersonJoiner._other_mentions``);
    None for a name too short or of a script to find safely. A kanji name may be followed
    by one of ``titles`` (an alternation: 岩崎 + 部長)."""
    escaped = regex.escape(name)
    if regex.fullmatch(r"\p{Lu}[\p{L}'’. -]{2,}", name):
        # ... and a one-word name in lower case, as chats type it (Aiden, then "aiden talks
        # too much"), unless the word is a common noun too (Mark, then "mark the boxes") or
        # part of a host or an address (mail.smith-family.net).
        lower = name.lower()
        if " " not in name and not listed_as_common_noun(lower):
            escaped = f"(?:{escaped}|(?<![.@/-]){regex.escape(lower)}(?![-@]|\\.\\w))"
        return regex.compile(r"(?<![\p{L}])" + escaped + r"(?![\p{L}])")
    # A handle (hiro.k, kazu_shop, ren2019): lower case with a mark or digits in it.
    if regex.fullmatch(r"(?=.{4,})[a-z][a-z0-9]*(?:[._-][a-z0-9]+)+|[a-z]{2,}\d+", name):
        return regex.compile(r"(?<![\w.@-])" + escaped + r"(?![\w@-]|\.\w)")
    if regex.fullmatch(r"[\p{Han}々]{2,}(?:\s[\p{Han}々]+)?", name):
        return regex.compile(r"(?<![\p{Han}々])" + escaped + r"(?:(?![\p{Han}々])|(?=" + titles + "))")
    if regex.fullmatch(r"[\p{Hiragana}\p{Katakana}ー\p{Han}々\s・]{3,}", name):
        return regex.compile(escaped)
    return None


# Between the names of a Japanese list (岡田、中村; 田中とさとみ), how far a listed
# name is read and what may border it on its other side (a mark, a particle, a space).
_LIST_SEPARATORS = "、,とや"
_LIST_WINDOW = 8
_LIST_ITEM_END = ("補助記号", "助詞", "空白", "助動詞")
# A foreign name in katakana as a list item, its parts perhaps joined by ・ (ラジェシュ,
# ラージ・パテル).
_KATAKANA_NAME = r"[\p{Katakana}ー]{2,10}(?:・[\p{Katakana}ー]{1,10})*"
_KATAKANA_ITEM = regex.compile(_KATAKANA_NAME + r"(?=[、,。)）\s]|と|や|$)")
_KATAKANA_ITEM_BEFORE = regex.compile(
    r"(?:^|(?<=[:：、,(（\s]))(?P<item>" + _KATAKANA_NAME + r")$")

# An English list: a given name (and an initial) between list separators, each item
# perhaps followed by a note in parentheses (Tomasz (remote), Maya (7)), or the person
# inside parentheses (me (Ana), Ben).
_LATIN_LIST_ITEM = r"(?P<item>(?P<name>\p{Lu}\p{Ll}+(?:-\p{Lu}?\p{Ll}+)?)(?: \p{Lu}\.)?)"
_LATIN_LISTED_AFTER = regex.compile(
    r"(?: \([^()\n]{1,15}\)|\))?(?:,? and |, | & | \+ )" + _LATIN_LIST_ITEM
    + r"(?=[,;:!?)]|\.(?!\p{L})| and | & | \+ | [—–-] | \(|\s*$|\s*\n"
    r"| (?:for|to|from|at|in|on|with|about)(?![\p{L}]))")
_LATIN_LISTED_BEFORE = regex.compile(
    r"(?:^|(?<=[\s:(]))" + _LATIN_LIST_ITEM + r"(?:,? and |, | & | \+ )$")


def _foreign_name(word: str) -> bool:
    """A katakana list item that reads as a name: parts joined by ・, or one word of four
    or more letters the dictionary lists as a name or not at all (ラジェシュ, not コーヒー;
    short words are too often a thing or a pet: カツオ, ワカメ)."""
    return "・" in word or (len(word) >= 4 and unknown_word_or_name(word))


def _is_person_name(token: Any) -> bool:
    """Whether Sudachi reads the token as a person name (人名)."""
    return _PERSON_NAME_POS.search("-".join(token.part_of_speech())) is not None


class _PersonJoiner:
    """Person spans as whole names (``pii.honorific_names`` names the Japanese parts,
    ``pii.given_name_pairs.surname_after`` the Latin surnames carried over)."""

    def __init__(self, config: HonorificNamesConfig, pairs: GivenNamePairsConfig,
                 is_given_name: Callable[[str], bool] | None = None,
                 kana_given_names: _KanaGivenNames | None = None):
        self._is_given_name = is_given_name
        self._kana_given_names = kana_given_names
        # A katakana given name after a kanji surname, a space between or none: 2-4
        # katakana, then a word of katakana_given_name_followed_by, a space or the end.
        followed_by = sorted(config.katakana_given_name_followed_by, key=len, reverse=True)
        self._katakana_given_after = regex.compile(
            r"[ 　]?[\p{Katakana}ー]{2,4}(?=" + "|".join(map(regex.escape, followed_by)) + r"|\s|$)")
        self._surnames = _SudachiTokens(config.pos, config.surface)
        self._surname_pos = regex.compile(config.listed_as_surname)
        self._honorifics = tuple(sorted(config.honorifics, key=len, reverse=True))
        self._not_surnames = frozenset(config.role_nouns) | frozenset(config.relation_nouns)
        self._surname_after = regex.compile(_expand_words(pairs.surname_after, pairs.words))
        self._not_name_rest = (frozenset(config.not_name_rest) | self._not_surnames
                               | frozenset(config.titles_after_name))
        self._titles_after_name = "|".join(map(regex.escape, config.titles_after_name)) or "(?!)"
        honorifics = "|".join(map(regex.escape, self._honorifics))
        self._cut_name_rest = regex.compile(
            r"(?P<rest>(?<=[\p{Han}々])[\p{Han}々]{1,2}|(?<=(?:^|[\s:：])\p{Hiragana})\p{Hiragana}{1,3})"
            r"(?=[\s、。,.()（）「」『』:：]|$|" + honorifics + ")")

    def join(self, text: str, results: list[RecognizerResult]) -> list[RecognizerResult]:
        """Overlapping person spans joined into one (John Wesley + Wesley Powell is John
        Wesley Powell: two recognisers read one name), a kanji surname carried over a
        katakana or a spaced kanji given name that follows it (祖母の新井 + トメが, 青木 +
        陸斗の; not a role, a relation or a common noun: 田中 部長), a kanji name carried
        back over a word before it, a space between or none, that the dictionary lists
        as a surname (柏木 遥斗, 東雲遥斗), and a Latin name carried over an accented
        surname after it (Brigid Ó Súilleabháin); and the names listed beside a person
        (:meth:`_list_neighbours`)."""
        others = [r for r in results if r.entity_type != "PERSON"]
        persons = [r for r in results if r.entity_type == "PERSON"]
        for person in persons:
            self._extend_over_name_parts(text, person)
            self._carry_over_cut_name(text, person)
        joined: list[RecognizerResult] = []
        for person in sorted(persons, key=lambda r: (r.start, -r.end)):
            if joined and person.start < joined[-1].end:
                last = joined[-1]
                last.end = max(last.end, person.end)
                last.score = max(last.score, person.score)
                continue
            joined.append(person)
        for person in joined:
            if _KANJI_NAME.fullmatch(text, person.start, person.end):
                self._carry_over_kanji_name_parts(text, person)
            elif _LATIN_NAME_END.search(text, person.start, person.end):
                surname = self._surname_after.match(text, person.end)
                if surname is not None:
                    person.end = surname.end()
        return others + joined + self._list_neighbours(text, joined)

    def _carry_over_cut_name(self, text: str, person: RecognizerResult) -> None:
        """A name cut inside its word carried to the word's end (``not_name_rest``)."""
        rest = self._cut_name_rest.match(text, person.end)
        if rest is not None and rest["rest"] not in self._not_name_rest:
            person.end = rest.end()

    def _carry_over_kanji_name_parts(self, text: str, person: RecognizerResult) -> None:
        """A kanji surname's span carried over the given name after it and a kanji name's
        back over the surname before it (see :meth:`join`)."""
        given = self._katakana_given_after.match(text, person.end)
        if given is None:
            given = _KANJI_GIVEN_AFTER.match(text, person.end)
            if given is not None and (given.group().strip() in self._not_surnames
                                      or ja_name_not_common_noun(given.group().strip())
                                      is False):
                given = None
        if given is None and self._kana_given_names is not None:
            given = _KANA_GIVEN_AFTER.match(text, person.end)
            if given is not None and not self._kana_given_names(given.group().strip()):
                given = None
        if given is not None:
            person.end = given.end()
        # A given name's kanji in parentheses after a surname, as minutes tell two people
        # apart (高橋(晴)); not a note (田中(欠)): the dictionary lists it as a given name.
        note = _GIVEN_NAME_NOTE.match(text, person.end)
        if (note is not None and self._kana_given_names is not None
                and self._kana_given_names.listed_as_given_name(note["kanji"])):
            person.end = note.end()
        surname = _KANJI_WORD_BEFORE.search(text, 0, person.start)
        if surname is not None and (
                self._surnames.listed_as(surname.group().rstrip(), self._surname_pos)
                or self._is_surname_by_place(text, surname, person)):
            person.start = surname.start()

    def around_private_persons(self, text: str,
                               results: list[RecognizerResult]) -> list[RecognizerResult]:
        """Called once the public figures are set aside, so that a private person's
        neighbours are found and a public figure's are not (the Mona Lisa, Leonardo da
        Vinci): the given names listed beside a private person (interviewers: me, Femi,
        and <person>), then every other mention of those names (:meth:`_other_mentions`)."""
        persons = [r for r in results if r.entity_type == "PERSON"]
        if not persons:
            return []
        def latin_neighbours(person: RecognizerResult) -> tuple[tuple[int, int] | None, ...]:
            return (self._latin_listed_after(text, person.end),
                    self._latin_listed_before(text, person.start))

        listed = _listed_beside(persons, latin_neighbours)
        # A name's reading or other script in parentheses right after it (松岡 ひかり(まつおか
        # ひかり), 박지훈さん(Park Ji-hoon), Dmitry Volkov (Дмитрий Волков)).
        # A kana reading only of a name in kanji (ジョン・スミスさん(アメリカ) is a note).
        listed += [RecognizerResult("PERSON", *reading.span("reading"), person.score)
                   for person in persons
                   if (reading := _NAME_READING.match(text, person.end)) is not None
                   and (_HAS_KANJI.search(text, person.start, person.end)
                        or not _KANA.fullmatch(reading["reading"]))]
        mentions = self._other_mentions(text, results + listed)
        for mention in mentions:
            if _KANJI_NAME.fullmatch(text, mention.start, mention.end):
                self._carry_over_kanji_name_parts(text, mention)
        # ... and the names listed beside another mention (Rachel mentored <Tyler> and
        # Amara, where Tyler is found as Tyler Jensen's).
        taken = [(r.start, r.end) for r in results + listed + mentions]
        listed_by_mentions = [r for r in _listed_beside(mentions, latin_neighbours)
                              if _free(r.start, r.end, taken)]
        return listed + mentions + listed_by_mentions

    def _other_mentions(self, text: str,
                        results: list[RecognizerResult]) -> list[RecognizerResult]:
        """Every other mention of a person's name, and of its words (Femi liked her SQL;
        ささき ゆうと, then ゆうとが熱を): a word of at least 3 Latin letters between
        non-letters, 2 kanji between non-kanji, or 3 kana; not inside a span already
        found."""
        persons = [r for r in results if r.entity_type == "PERSON"]
        names = set()
        for person in persons:
            name = text[person.start : person.end]
            names.add(name)
            names.update(word for word in _NAME_PART_SEPARATORS.split(name) if word != name)
        found: list[RecognizerResult] = []
        taken = [(r.start, r.end) for r in results]
        for name in sorted(names, key=len, reverse=True):
            mention = _mention_pattern(name, self._titles_after_name)
            if mention is None:
                continue
            score = max(p.score for p in persons)
            for match in mention.finditer(text):
                if _free(*match.span(), taken):
                    taken.append(match.span())
                    found.append(RecognizerResult("PERSON", *match.span(), score))
        return found

    @staticmethod
    def _extend_over_name_parts(text: str, person: RecognizerResult) -> None:
        """The person's span carried over the rest of its name (``_PARTS_AFTER_KATAKANA``
        and the others above)."""
        last, first = text[person.end - 1], text[person.start]
        if regex.match(r"[\p{Katakana}ー]", last):
            parts = _PARTS_AFTER_KATAKANA.match(text, person.end)
            if parts is not None:
                person.end = parts.end()
        if regex.match(r"[\p{Katakana}ー]", first):
            parts = _PARTS_BEFORE_KATAKANA.search(text, 0, person.start)
            if parts is not None:
                person.start = parts.start()
        if regex.match(r"\p{Latin}", last):
            for continuation in (_NICKNAME_AND_SURNAME, _GENERATION_SUFFIX):
                parts = continuation.match(text, person.end)
                if parts is not None:
                    person.end = parts.end()

    def _list_neighbours(self, text: str, persons: list[RecognizerResult]) -> list[RecognizerResult]:
        """Japanese names listed beside a person (出席:岡田、<person>; 幹事は<person>と
        さとみ; 孫一同(<person>、<person>、美咲)): a word the dictionary reads as a person
        name (人名) right after or before a person, with only 、, と or や between (not ・,
        which lists a name's spellings too: 斉藤・齋藤), and a mark, a particle or the
        text's edge on its other side; repeated along the list."""
        return _listed_beside(persons, lambda person: (
            self._listed_after(text, person.end), self._listed_before(text, person.start)))

    def _listed_after(self, text: str, end: int) -> tuple[int, int] | None:
        """The span of a listed name right after a separator at ``end``, if any: one the
        dictionary reads as a name, or a foreign name in katakana (ラージ・パテル, ラジェシュ:
        a katakana word the dictionary does not read as a common noun)."""
        if end >= len(text) or text[end] not in _LIST_SEPARATORS:
            return None
        katakana = _KATAKANA_ITEM.match(text, end + 1)
        if katakana is not None and _foreign_name(katakana.group()):
            return katakana.span()
        tokens = self._surnames.tokenize(text[end + 1 : end + 1 + _LIST_WINDOW])
        if (len(tokens) == 0 or not _is_person_name(tokens[0])
                or (len(tokens) > 1 and tokens[1].part_of_speech()[0] not in _LIST_ITEM_END)):
            return None
        return end + 1, end + 1 + tokens[0].end()

    def _listed_before(self, text: str, start: int) -> tuple[int, int] | None:
        """The span of a listed name right before a separator ending at ``start``, if any."""
        if start == 0 or text[start - 1] not in _LIST_SEPARATORS:
            return None
        katakana = _KATAKANA_ITEM_BEFORE.search(text, 0, start - 1)
        if katakana is not None and _foreign_name(katakana["item"]):
            return katakana.span("item")
        window_start = max(0, start - 1 - _LIST_WINDOW)
        tokens = list(self._surnames.tokenize(text[window_start : start - 1]))
        if (not tokens or not _is_person_name(tokens[-1])
                or (len(tokens) > 1 and tokens[-2].part_of_speech()[0] not in _LIST_ITEM_END)):
            return None
        return window_start + tokens[-1].begin(), start - 1

    def _latin_listed_after(self, text: str, end: int) -> tuple[int, int] | None:
        """A given name (with an initial: Zoe K.) listed right after a person, after a
        comma, "and" or "&", ending its list item (interviewers: <person>, Femi, and ...)."""
        if self._is_given_name is None:
            return None
        listed = _LATIN_LISTED_AFTER.match(text, end)
        if listed is None or not self._is_given_name(listed["name"]):
            return None
        return listed.span("item")

    def _latin_listed_before(self, text: str, start: int) -> tuple[int, int] | None:
        """A given name listed right before a person (me, Femi, and <person>)."""
        if self._is_given_name is None:
            return None
        listed = _LATIN_LISTED_BEFORE.search(text, 0, start)
        if listed is None or not self._is_given_name(listed["name"]):
            return None
        return listed.span("item")

    def _is_surname_by_place(self, text: str, word: Any, person: RecognizerResult) -> bool:
        """A kanji word the dictionary reads as a common noun (東雲 "dawn") that stands
        where a surname stands: 2-3 kanji right after の and right before a given name
        that an honorific follows (取引先の東雲陽翔様); not a role or a relation word."""
        surface = word.group()
        return (len(surface) in (2, 3) and surface not in self._not_surnames
                and text[: word.start()].endswith("の")
                and text.startswith(self._honorifics, person.end))
