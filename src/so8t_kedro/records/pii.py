"""PII scrubbing: Presidio's analyzer and anonymizer with GiNZA's Japanese NER.

Person names come from a spaCy named-entity model (GiNZA's ``ja_ginza`` for Japanese,
each name confirmed by a Sudachi dictionary name), from Sudachi names right before an
honorific (松本先生), and from English patterns; addresses, phone numbers, e-mails, card and bank accounts, My Numbers, passports,
driver's licences, IP addresses and secrets from pattern recognisers whose regexes and
scores live in ``conf/base/parameters_pii.yml``. The checks that regexes cannot make
(Luhn, the My Number check digit, IBAN mod 97, ``ipaddress``, digit counts) are the
named validators below. Presidio's anonymizer replaces every entity by its typed
placeholder (``<PERSON>``, ``<ADDRESS>``, ...), resolving overlaps.

Nothing is downloaded: the engine is built from spaCy pipelines that are installed
packages (or spaCy's blank tokenizer), never through Presidio's ``NlpEngineProvider``,
whose default would fetch ``en_core_web_lg``.
"""

from __future__ import annotations

import functools
import importlib.resources
import ipaddress
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import regex
import spacy
from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import SpacyRecognizer
from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig
from pydantic import BaseModel, ConfigDict, Field
from spacy.tokens import Doc

logger = logging.getLogger(__name__)

BLANK_MODEL = "blank"
# What a person's characters become before ``public_facts.private`` is searched: no
# letter (a private word inside a name is part of the name: 兄 in 中大兄皇子), and a
# mark the private regexes can name (\uE000) where the person's place matters (a
# self-introduction: 田中花子です, I'm Dana Reyes).
PERSON_MARK = "\ue000"


# ------------------------------------------------------------------ validators


def luhn_valid(digits: str) -> bool:
    """Luhn checksum of a digit string (all-equal digits such as 0000... are rejected)."""
    if len(set(digits)) == 1:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def my_number_valid(digits: str) -> bool:
    """Check digit of a 12-digit Japanese individual number (個人番号)."""
    if len(digits) != 12 or len(set(digits)) == 1:
        return False
    body = digits[:11]
    total = 0
    for n in range(1, 12):  # P_n is the n-th digit from the right of the first 11
        q = n + 1 if n <= 6 else n - 5
        total += (ord(body[11 - n]) - 48) * q
    remainder = total % 11
    check = 0 if remainder <= 1 else 11 - remainder
    return check == ord(digits[11]) - 48


def iban_valid(text: str) -> bool:
    """ISO 13616 check: the rearranged IBAN, letters as 10..35, is 1 modulo 97."""
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _is_subnet_mask(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """An IPv4 netmask of contiguous ones, at least the first octet (255.0.0.0,
    255.255.255.0, 255.255.255.252): a mask, not a host."""
    if address.version != 4:
        return False
    value = int(address)
    inverse = ~value & 0xFFFFFFFF
    return value >> 24 == 0xFF and inverse & (inverse + 1) == 0


def _ip_valid(text: str) -> bool:
    """A valid address that can point at a host: not loopback (127.0.0.1, ::1), the
    unspecified address (0.0.0.0, ::), multicast, the limited broadcast
    255.255.255.255 or a subnet mask (255.255.255.0), which identify no one."""
    try:
        address = ipaddress.ip_interface(text).ip
    except ValueError:
        return False
    return not (address.is_loopback or address.is_unspecified or address.is_multicast
                or _is_subnet_mask(address))


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


_COMMON_NOUN_POS = regex.compile(r"^名詞-普通名詞")
_PERSON_NAME_POS = regex.compile(r"^名詞-固有名詞-人名")


def _ja_name_not_common_noun(text: str) -> bool | None:
    """False for a Japanese word that Sudachi reads as a common noun and its dictionary
    lists as no person name (直通 in 担当者直通:03-..., 変更 in 担当者変更): a form label
    before an ordinary word. None (no opinion) otherwise: 酒井, 平野 (a common noun and
    a surname), katakana names."""
    tokens = _sudachi_tokenizer().tokenize(text)
    if len(tokens) == 0:
        return None
    first = tokens[0]
    surface = first.surface()
    if (not regex.fullmatch(r"[\p{Han}々]+", surface)
            or not _COMMON_NOUN_POS.search("-".join(first.part_of_speech()))):
        return None
    listed = any(m.surface() == surface and _PERSON_NAME_POS.search("-".join(m.part_of_speech()))
                 for m in _sudachi_dictionary().lookup(surface))
    return None if listed else False


# Validator name (conf) -> check of the matched text. True raises a match to score 1.0,
# False drops it, None leaves its score.
VALIDATORS: dict[str, Callable[[str], bool | None]] = {
    "luhn": lambda text: luhn_valid(_digits(text)),
    "my_number": lambda text: my_number_valid(_digits(text)),
    "iban": iban_valid,
    "ip_address": _ip_valid,
    "digits_10_11": lambda text: len(_digits(text)) in (10, 11),
    "digits_8_15": lambda text: 8 <= len(_digits(text)) <= 15,
    "ja_name_not_common_noun": _ja_name_not_common_noun,
}


# ---------------------------------------------------------------------- config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PatternConfig(_Strict):
    name: str
    regex: str
    score: float = Field(ge=0.0, le=1.0)


class RecognizerConfig(_Strict):
    name: str
    entity: str
    languages: list[str]
    patterns: list[PatternConfig]
    validator: str | None = None
    ignore_case: bool = False
    # Word lists a pattern names as {{name}}: each becomes an alternation of the words
    # (escaped), so that long lists stay data in the YAML.
    words: dict[str, list[str]] = Field(default_factory=dict)

    def model_post_init(self, _context: Any) -> None:
        named = {n for p in self.patterns for n in regex.findall(r"\{\{(\w+)\}\}", p.regex)}
        missing = sorted(named - set(self.words))
        if missing:
            raise ValueError(f"pii.recognizers.{self.name}: no words for {missing}")

    def expanded(self, pattern: PatternConfig) -> str:
        """The pattern's regex with every {{name}} replaced by its word list."""
        return _expand_words(pattern.regex, self.words)


def _expand_words(pattern: str, words: Mapping[str, Sequence[str]]) -> str:
    """A regex with every {{name}} replaced by the alternation of words[name] (escaped)."""
    return regex.sub(
        r"\{\{(\w+)\}\}", lambda m: "|".join(map(regex.escape, words[m.group(1)])), pattern
    )


class NerConfig(_Strict):
    models: dict[str, str]
    exclude: list[str]
    labels: dict[str, str]
    score: float = Field(ge=0.0, le=1.0)
    reject: str
    run_if_sudachi_pos: dict[str, str]
    run_if_sudachi_surface: str
    keep_only_over_sudachi_tokens: bool
    batch_size: int = Field(ge=1)
    # An entity whose text matches extend_if is extended over what follows it when that
    # matches extend_over (グエン・バン + ・ナム: GiNZA cuts long katakana names short).
    extend_if: str | None = None
    extend_over: str | None = None


class HonorificNamesConfig(_Strict):
    """Names found by Sudachi before a personal honorific (``pii.honorific_names``)."""

    languages: list[str]
    pos: str
    # A token whose part of speech matches place_pos counts only when the dictionary
    # also lists its surface with a part of speech matching also_listed_as.
    place_pos: str
    also_listed_as: str
    # A kanji word the tokenizer reads as a common noun (common_noun_pos: 平野 "a plain")
    # counts when it has at least common_noun_min_length characters, no prefix (お客様)
    # and the dictionary also lists it as a surname (listed_as_surname: 平野先生, 桑原様).
    common_noun_pos: str
    listed_as_surname: str
    common_noun_min_length: int = Field(ge=1)
    # Trades, roles and kin that take an honorific and are also dictionary names
    # (大家さん, 八百屋さん): never a name.
    role_nouns: list[str] = Field(default_factory=list)
    surface: str
    # A given name in kana between such a name and the honorific (中野ひなたちゃん): a
    # token whose surface matches given_name_surface and part of speech given_name_pos.
    given_name_surface: str | None = None
    given_name_pos: str | None = None
    # With no honorific: a private relation word and の before a word listed as a
    # surname and such a kana given name (同級生の宮崎あかりに).
    relation_nouns: list[str] = Field(default_factory=list)
    relation_name_followed_by_pos: list[str] = Field(default_factory=list)
    # ... and there a surname alone, with no given name (元上司の吉岡に): a proper noun
    # (pos) of two or more kanji that the dictionary lists as a surname.
    relation_surname_alone: bool = False
    # A kana given name that Sudachi reads across the honorific or as other words (り +
    # こ in 工藤りこちゃん, そう + たくん in 安田そうたくん): after a kanji word the
    # dictionary lists as a surname, a run of kana matching kana_run_surface right
    # before an honorific in the text itself, unless it matches kana_run_not.
    kana_run_surface: str | None = None
    kana_run_not: str | None = None
    honorifics: list[str] = Field(min_length=1)
    score: float = Field(ge=0.0, le=1.0)


class PackageNamesConfig(_Strict):
    """A given-name list published inside an installed package: gender-guesser's copy of
    Jörg Michael's ``nam_dict.txt`` (~48,000 first names from ~55 countries, each with a
    frequency 1-13 per country), read as it is shipped."""

    package: str
    file: str
    # A name counts when its highest frequency in any country is at least this.
    min_frequency: int = Field(ge=1, le=13)


class GivenNamePairsConfig(_Strict):
    """English names as "<given name> <Capitalised surname>" (``pii.given_name_pairs``)."""

    languages: list[str]
    # Matches a candidate pair; groups ``given`` and ``surname``. {{name}} as in
    # RecognizerConfig.words.
    regex: str
    words: dict[str, list[str]] = Field(default_factory=dict)
    # Given names always taken (the project's list, and lists per region) ...
    names: list[str]
    regional_names: dict[str, list[str]] = Field(default_factory=dict)
    more_regional_names: dict[str, list[str]] = Field(default_factory=dict)
    # ... names from the package ...
    package_names: PackageNamesConfig
    # ... less these (words and place-name openings that are also given names); English
    # stop words (spaCy's list) are never a given name or a surname.
    not_names: list[str]
    # A pair right after this (a capitalised word inside a sentence, group ``word``) is
    # the end of a longer proper name (The New York Times), unless the word is a given
    # name (Mary Ann Smith) or one of ``titles`` (Mr Oscar Lindgren).
    longer_name_before: str
    titles: list[str]
    score: float = Field(ge=0.0, le=1.0)


class PublicFactsConfig(_Strict):
    """Persons asked about as public facts stay (``pii.public_facts``): a factual
    question or request about a person (frame: any question, とは, について, tell me
    about, ...; or the person's works named after the name: Dr. Seuss books, 宇多田ヒカル
    のデビュー曲) with no private context in the text (private: a relation word, a request
    for contact, address, whereabouts or personal data, first-person involvement,
    today / 明日; nor any other entity found in it)."""

    entities: list[str]
    # Per language: a question or a request about facts (frame) and what makes it about
    # a private person (private); both searched in the whole text. {{name}} is the
    # alternation of words[name], as in RecognizerConfig.words.
    frame: dict[str, str]
    private: dict[str, str]
    words: dict[str, list[str]] = Field(default_factory=dict)
    # A question that only asks who a bare name is ("Who is Nadia Petrova?"): no frame,
    # an identity lookup of someone the text says nothing public about.
    identity_only: dict[str, str] = Field(default_factory=dict)
    # Matched right after a person: the person's public works (" books", "のデビュー曲"),
    # a frame of its own.
    works_after: dict[str, str] = Field(default_factory=dict)
    # Searched right before a person, ending there: a request to contact the person or
    # act on them ("call Tom Baker", "remind Ana Silva"), private context.
    private_before: dict[str, str] = Field(default_factory=dict)
    # Any entity of another type in the text (a phone, an address, an account) is
    # private context.
    other_entities_are_private: bool = True
    # Whether a person stays only inside a frame (a question or request about facts, or
    # their works after the name). False inverts the rule: a person stays in ANY text
    # with no private context (the ``private`` list, ``private_before``, a bare
    # ``identity_only`` lookup, another entity); the frame is then not looked for. What
    # must be listed is the private context, a smaller and steadier set than the many
    # ways of asking about a public person (浅田真央の五輪での成績, 坂口安吾の堕落論を要約して,
    # List the films Audrey Hepburn starred in).
    frame_required: bool = True

    def model_post_init(self, _context: Any) -> None:
        if set(self.frame) != set(self.private):
            raise ValueError("pii.public_facts: frame and private need the same languages")
        for key in ("frame", "private", "identity_only", "works_after", "private_before"):
            for pattern in getattr(self, key).values():
                named = set(regex.findall(r"\{\{(\w+)\}\}", pattern))
                missing = sorted(named - set(self.words))
                if missing:
                    raise ValueError(f"pii.public_facts.{key}: no words for {missing}")

    def expanded(self, key: str) -> dict[str, str]:
        """The regexes of ``key`` per language, every {{name}} replaced by its words."""
        return {language: _expand_words(pattern, self.words)
                for language, pattern in getattr(self, key).items()}


class BrandsConfig(_Strict):
    """Brands and firms named after people stay (``pii.brands``): a person span inside a
    listed brand name as written, or followed at once by a product or shop word."""

    entities: list[str]
    names: list[str]
    product_words: list[str]
    # Brands beginning with a personal title (Dr Pepper), matched as written like names.
    titled_names: list[str] = Field(default_factory=list)
    # Japanese trade and product words: a person span that ends in one or is followed
    # at once by one is a firm (山田うどん, 田中貴金属).
    business_words: list[str] = Field(default_factory=list)
    # Shop-name suffixes that make a firm only right after the span (木村屋, 山本堂): a
    # surname may end in them itself (土屋, 古屋), so a span ending in one stays a name.
    business_suffixes: list[str] = Field(default_factory=list)


class PiiConfig(_Strict):
    """``params:pii`` (conf/base/parameters_pii.yml); unknown keys are errors."""

    placeholders: dict[str, str]
    score_threshold: float = Field(ge=0.0, le=1.0)
    allow_list: list[str]
    # Addresses that identify no one (public DNS resolvers: 1.1.1.1, 8.8.8.8), as data.
    public_ip_addresses: list[str] = Field(default_factory=list)
    ner: NerConfig
    honorific_names: HonorificNamesConfig
    given_name_pairs: GivenNamePairsConfig
    public_facts: PublicFactsConfig
    brands: BrandsConfig
    recognizers: list[RecognizerConfig]

    def model_post_init(self, _context: Any) -> None:
        entities = {r.entity for r in self.recognizers} | set(self.ner.labels.values())
        missing = sorted(entities - set(self.placeholders))
        if missing:
            raise ValueError(f"pii.placeholders has no placeholder for {missing}")
        unknown = sorted({r.validator for r in self.recognizers} - {None, *VALIDATORS})
        if unknown:
            raise ValueError(f"pii.recognizers: unknown validator(s) {unknown}; known: "
                             f"{sorted(VALIDATORS)}")

    @property
    def entity_types(self) -> list[str]:
        """Every entity type, in the order of ``placeholders``."""
        return list(self.placeholders)


# -------------------------------------------------------------------- engine


class _ValidatedPatternRecognizer(PatternRecognizer):
    """A Presidio pattern recogniser whose matches go through a named validator."""

    def __init__(self, config: RecognizerConfig, language: str):
        flags = regex.MULTILINE | regex.DOTALL | (regex.IGNORECASE if config.ignore_case else 0)
        super().__init__(
            supported_entity=config.entity,
            name=f"{config.name}_{language}",
            supported_language=language,
            patterns=[Pattern(p.name, config.expanded(p), p.score) for p in config.patterns],
            global_regex_flags=flags,
        )
        self._validator = VALIDATORS[config.validator] if config.validator else None
        # The same regexes and flags Presidio's matcher compiles: no match of any of
        # them means this recogniser finds nothing in the text.
        self._screens = [regex.compile(p.regex, flags) for p in self.patterns]

    def may_match(self, text: str) -> bool:
        """Whether any pattern matches somewhere (what ``analyze`` would look at)."""
        return any(screen.search(text) for screen in self._screens)

    def validate_result(self, pattern_text: str) -> bool | None:
        return self._validator(pattern_text) if self._validator else None


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

    def analyze(self, text, entities, nlp_artifacts=None):
        results = [
            r for r in super().analyze(text, entities, nlp_artifacts)
            if not self._reject.search(text[r.start : r.end])
        ]
        if self._confirm is None or not results:
            return [self._extended(text, r) for r in results]
        names = self._confirm.spans(text)
        return [self._extended(text, r) for r in results
                if any(r.start < end and start < r.end for start, end in names)]


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
        honorifics = sorted(config.honorifics, key=len, reverse=True)
        self._kana_run = (regex.compile(
            f"(?:{config.kana_run_surface})(?=" + "|".join(map(regex.escape, honorifics)) + ")")
            if config.kana_run_surface else None)
        self._kana_run_not = regex.compile(config.kana_run_not) if config.kana_run_not else None
        screen = list(config.honorifics) + [f"{word}の" for word in config.relation_nouns]
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
                    or self._is_surname_read_as_noun(tokens, i)):
                results.append(RecognizerResult("PERSON", token.begin(), end, self._score))
        for i in range(2, len(tokens)):
            end = self._relation_then_name(tokens, i)
            if end is not None:
                results.append(RecognizerResult("PERSON", tokens[i].begin(), end, self._score))
        return results

    def _is_kana_given_name(self, token: Any) -> bool:
        """A given name in kana as the configuration describes it (ひなた, ここ)."""
        return (self._given_surface is not None
                and self._given_surface.search(token.surface()) is not None
                and self._given_pos.search("-".join(token.part_of_speech())) is not None)

    def _relation_then_name(self, tokens: Any, i: int) -> int | None:
        """Where the name ends that starts at token i after a relation word and の: a
        kanji word the dictionary lists as a surname and a kana given name, then a
        particle or the end, no honorific needed (同級生の宮崎あかりに); with
        ``relation_surname_alone``, also a proper noun of two or more kanji listed as a
        surname before a particle or a punctuation mark (元上司の吉岡に). None otherwise."""
        if (not self._relations or tokens[i - 1].surface() != "の"
                or tokens[i - 2].surface() not in self._relations):
            return None
        surface = tokens[i].surface()
        if (surface in self._role_nouns or not self._tokens.surface_matches(surface)
                or not self._tokens.listed_as(surface, self._surname)):
            return None
        if i + 1 < len(tokens) and self._is_kana_given_name(tokens[i + 1]):
            if (i + 2 >= len(tokens)
                    or tokens[i + 2].part_of_speech()[0] in self._after_relation_name):
                return tokens[i + 1].end()
            return None
        if (self._surname_alone and len(surface) >= 2 and self._tokens.matches(tokens[i])
                and i + 1 < len(tokens)
                and tokens[i + 1].part_of_speech()[0] in self._after_relation_name):
            return tokens[i].end()
        return None

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
        if not regex.fullmatch(r"\p{Lu}\p{Ll}+(?:-\p{Lu}\p{Ll}+)*", name):
            continue
        frequencies = [int(ch, 16) for ch in line[30:] if ch in "123456789ABCDabcd"]
        if frequencies and max(frequencies) >= min_frequency:
            names.add(name)
    return frozenset(names)


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
        names = set(config.names) | regional | (
            package_given_names(config.package_names) - set(config.not_names) - stop_words
        )
        self._given_names = frozenset(names)
        self._stop_words = frozenset(stop_words)
        self._pair = regex.compile(_expand_words(config.regex, config.words))
        self._longer_name_before = regex.compile(config.longer_name_before)
        self._titles = frozenset(config.titles)
        self._score = config.score

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

    def may_match(self, text: str) -> bool:
        return next(self._pairs(text), None) is not None

    def analyze(self, text, entities, nlp_artifacts=None):
        return [
            RecognizerResult("PERSON", match.start(), match.end(), self._score)
            for match in self._pairs(text)
        ]


def _load_pipeline(language: str, model: str, exclude: Sequence[str]) -> spacy.Language:
    """An installed spaCy package, or spaCy's blank tokenizer; never a download."""
    if model == BLANK_MODEL:
        return spacy.blank(language)
    if not spacy.util.is_package(model):
        raise ModuleNotFoundError(
            f"pii.ner.models.{language}: the spaCy pipeline {model!r} is not installed "
            f"(pip install it, or set it to {BLANK_MODEL!r}); nothing is downloaded at run time"
        )
    return spacy.load(model, exclude=list(exclude))


@dataclass
class ScrubResult:
    """A scrubbed text, its replacements per entity type and the replaced spans
    ``(entity type, start, end)`` of the input, or the reason it failed."""

    text: str | None
    counts: Counter = field(default_factory=Counter)
    error: str | None = None
    spans: list[tuple[str, int, int]] = field(default_factory=list)


class PiiScrubber:
    """Presidio analyzer (GiNZA NER + pattern recognisers) and anonymizer, built once."""

    def __init__(self, config: PiiConfig):
        self.config = config
        pipelines = {
            language: _load_pipeline(language, model, config.ner.exclude)
            for language, model in config.ner.models.items()
        }
        ignored_labels = set()
        for nlp in pipelines.values():
            if "ner" in nlp.pipe_names:
                ignored_labels |= set(nlp.get_pipe("ner").labels) - set(config.ner.labels)
        engine = SpacyNlpEngine(
            models=[{"lang_code": lang, "model_name": m} for lang, m in config.ner.models.items()],
            ner_model_configuration=NerModelConfiguration(
                model_to_presidio_entity_mapping=dict(config.ner.labels),
                labels_to_ignore=sorted(ignored_labels),
                default_score=config.ner.score,
            ),
        )
        engine.nlp = pipelines  # loaded here: SpacyNlpEngine.load() would try to download
        languages = list(pipelines)
        name_tokens = {
            language: _SudachiTokens(pos, config.ner.run_if_sudachi_surface)
            for language, pos in config.ner.run_if_sudachi_pos.items()
        }
        registry = RecognizerRegistry(supported_languages=languages)
        for language, nlp in pipelines.items():
            if "ner" in nlp.pipe_names:
                names = name_tokens.get(language)
                confirm = names if config.ner.keep_only_over_sudachi_tokens else None
                registry.add_recognizer(_NerRecognizer(language, config.ner, confirm))
        # Recognisers that say cheaply whether they can match a text (may_match).
        self._pattern_recognizers: dict[
            str,
            list[_ValidatedPatternRecognizer | _HonorificNameRecognizer | _GivenNamePairRecognizer],
        ] = {language: [] for language in languages}
        for language in config.given_name_pairs.languages:
            if language in pipelines:
                given_name_pairs = _GivenNamePairRecognizer(config.given_name_pairs, language)
                registry.add_recognizer(given_name_pairs)
                self._pattern_recognizers[language].append(given_name_pairs)
        for language in config.honorific_names.languages:
            if language in pipelines:
                honorific_names = _HonorificNameRecognizer(config.honorific_names, language)
                registry.add_recognizer(honorific_names)
                self._pattern_recognizers[language].append(honorific_names)
        for recognizer in config.recognizers:
            for language in recognizer.languages:
                if language in pipelines:
                    pattern_recognizer = _ValidatedPatternRecognizer(recognizer, language)
                    registry.add_recognizer(pattern_recognizer)
                    self._pattern_recognizers[language].append(pattern_recognizer)
        self.languages = languages
        self._gates: dict[str, Callable[[str], bool]] = {
            language: lambda text, tokens=tokens: bool(tokens.spans(text))
            for language, tokens in name_tokens.items()
        }
        self.analyzer = AnalyzerEngine(
            registry=registry, nlp_engine=engine, supported_languages=languages
        )
        self.anonymizer = AnonymizerEngine()
        self.operators = {
            entity: OperatorConfig("replace", {"new_value": placeholder})
            for entity, placeholder in config.placeholders.items()
        }
        self.entities = config.entity_types
        self._public_ips = frozenset(ipaddress.ip_address(a) for a in config.public_ip_addresses)
        public_facts = config.public_facts
        (self._public_frame, self._private, self._identity_only, self._works_after,
         self._private_before) = (
            {language: regex.compile(pattern)
             for language, pattern in public_facts.expanded(key).items()}
            for key in ("frame", "private", "identity_only", "works_after", "private_before")
        )
        brands = sorted([*config.brands.names, *config.brands.titled_names], key=len, reverse=True)
        self._brand_names = regex.compile(
            r"(?<![\p{Latin}\d])(?:" + "|".join(map(regex.escape, brands)) + r")(?![\p{Latin}\d])"
        ) if brands else None
        self._product_after = regex.compile(
            r" (?:" + "|".join(map(regex.escape, config.brands.product_words)) + r")(?![\p{L}])"
        ) if config.brands.product_words else None
        business = sorted(config.brands.business_words, key=len, reverse=True)
        self._business_words = regex.compile(
            "|".join(map(regex.escape, business))) if business else None
        suffixes = sorted(config.brands.business_suffixes, key=len, reverse=True)
        self._business_suffixes = regex.compile(
            "|".join(map(regex.escape, suffixes))) if suffixes else None

    def _asks_public_facts(
        self, text: str, language: str, persons: Sequence[RecognizerResult] = (),
        others: Sequence[RecognizerResult] = (),
    ) -> bool:
        """Whether the text asks a factual question or request about its persons (any
        question but a bare "who is X?", とは, について, explain, tell me about; or names
        a person's works right after the name: Dr. Seuss books, 宇多田ヒカルのデビュー曲)
        with no private context: no word of a private relation, of contact or personal
        data, of first-person involvement or of today (my, babysitter, address, owes me,
        同僚, 恋人, 住所, 連絡, an honorific) outside the persons found, and no entity of
        another type (``others``: a phone, an account). Then the persons in it are
        public figures, asked about as such (``pii.public_facts``). A private word inside
        a name is part of the name (兄 in 中大兄皇子), so the persons' spans are replaced
        by ``PERSON_MARK`` before the private words are looked for. With
        ``frame_required`` false no frame is needed: any text with no private context
        keeps its persons."""
        if others and self.config.public_facts.other_entities_are_private:
            return False
        frame = self._public_frame.get(language)
        if frame is None:
            return False
        identity_only = self._identity_only.get(language)
        works_after = self._works_after.get(language)
        if identity_only is not None and identity_only.search(text) is not None:
            return False
        framed = not self.config.public_facts.frame_required or frame.search(text) is not None
        if not framed and works_after is not None:
            framed = any(works_after.match(text, person.end) is not None for person in persons)
        if not framed:
            return False
        before = self._private_before.get(language)
        if before is not None and any(before.search(text, 0, person.start) is not None
                                      for person in persons):
            return False
        rest = list(text)
        for person in persons:
            rest[person.start : person.end] = PERSON_MARK * (person.end - person.start)
        return self._private[language].search("".join(rest)) is None

    def _is_public_ip(self, text: str) -> bool:
        """Whether an address (with or without a prefix length) is one of
        ``public_ip_addresses``: a public resolver, no one's host."""
        try:
            address = ipaddress.ip_interface(text).ip
        except ValueError:
            return False
        return address in self._public_ips

    def _is_brand(self, text: str, result: RecognizerResult) -> bool:
        """Whether a person span is a brand named after a person (``pii.brands``): it
        overlaps a listed brand name as written (inside it, or running past it: "Walker
        Black" in Johnnie Walker Black), or a product or shop word follows it at once
        (Calvin Klein jacket; not Maria Lopez's jacket)."""
        if self._brand_names is not None:
            for brand in self._brand_names.finditer(text):
                if brand.start() < result.end and result.start < brand.end():
                    return True
        if (self._product_after is not None
                and self._product_after.match(text, result.end) is not None):
            return True
        return self._is_japanese_firm(text, result)

    def _is_japanese_firm(self, text: str, result: RecognizerResult) -> bool:
        """A Japanese person span that ends in a trade or product word, or that one
        follows at once (山田うどん, 田中貴金属, 鈴木商店): a firm named after a surname."""
        span = text[result.start : result.end]
        if not regex.search(r"[\p{Han}\p{Hiragana}\p{Katakana}]", span):
            return False
        if (self._business_suffixes is not None
                and self._business_suffixes.match(text, result.end) is not None):
            return True
        if self._business_words is None:
            return False
        if self._business_words.match(text, result.end) is not None:
            return True
        return any(self._business_words.fullmatch(span, start) is not None
                   for start in range(1, len(span)))

    def _runs_ner(self, text: str, language: str) -> bool:
        """Whether the text goes through the named-entity model: never for a pipeline
        without one; with a ``run_if_sudachi_pos`` gate only for a text with a matching
        token (for Japanese: a dictionary person name, 人名), since the model costs
        ~50x the tokenizer; otherwise always."""
        if "ner" not in self.analyzer.nlp_engine.get_nlp(language).pipe_names:
            return False
        gate = self._gates.get(language)
        return gate is None or gate(text)

    def _possible_entities(self, text: str, language: str) -> list[str]:
        """The entity types whose pattern recognisers match somewhere in the text, in
        the order of ``placeholders``. The analyzer is asked for these only: a text no
        pattern matches and no named-entity model reads has nothing to replace and skips
        the analyzer (~1 ms a text) altogether, and the others skip the recognisers
        (each ~0.05 ms of Presidio's bookkeeping) that cannot find anything in them."""
        found = {r.supported_entities[0] for r in self._pattern_recognizers[language]
                 if r.may_match(text)}
        return [entity for entity in self.entities if entity in found]

    def _ner_artifacts(self, texts: list[str], language: str) -> Iterator[Any]:
        """Presidio's NLP artifacts of texts that need the named-entity model, batched
        through ``nlp.pipe`` (``NlpEngine.process_batch``); a text whose batch failed is
        retried alone, and one that still fails yields its exception."""
        engine = self.analyzer.nlp_engine
        size = self.config.ner.batch_size
        for start in range(0, len(texts), size):
            batch = texts[start : start + size]
            try:
                artifacts = [a for _, a in engine.process_batch(batch, language, size)]
            except Exception:  # noqa: BLE001 - isolate the failing text below
                artifacts = []
                for text in batch:
                    try:
                        artifacts.append(engine.process_text(text, language))
                    except Exception as exc:  # noqa: BLE001 - the record is quarantined
                        artifacts.append(exc)
            yield from artifacts

    def _no_ner_artifacts(self, language: str) -> NlpArtifacts:
        """Artifacts without tokens or entities, for a text the named-entity model does
        not read: pattern recognisers read the text, and tokens matter only to context
        words, which none of ours has."""
        nlp = self.analyzer.nlp_engine.get_nlp(language)
        return NlpArtifacts(
            entities=[], tokens=Doc(nlp.vocab, words=[]), tokens_indices=[], lemmas=[],
            nlp_engine=self.analyzer.nlp_engine, language=language,
        )

    def scrub_one(
        self, text: str, language: str, artifacts: NlpArtifacts, entities: list[str]
    ) -> ScrubResult:
        """Scrub one text of the given entity types, given its NLP artifacts."""
        try:
            results = self.analyzer.analyze(
                text=text,
                language=language,
                entities=entities,
                nlp_artifacts=artifacts,
                score_threshold=self.config.score_threshold,
                allow_list=self.config.allow_list,
            )
            results = [r for r in results if not (
                r.entity_type == "IP_ADDRESS" and self._is_public_ip(text[r.start : r.end]))]
            brand_entities = self.config.brands.entities
            results = [r for r in results
                       if r.entity_type not in brand_entities or not self._is_brand(text, r)]
            public = self.config.public_facts.entities
            if results and self._asks_public_facts(
                text, language, [r for r in results if r.entity_type in public],
                [r for r in results if r.entity_type not in public],
            ):
                results = [r for r in results if r.entity_type not in public]
            if not results:
                return ScrubResult(text)
            anonymized = self.anonymizer.anonymize(
                text=text, analyzer_results=results, operators=self.operators
            )
        except Exception as exc:  # noqa: BLE001 - any engine error quarantines the record
            return ScrubResult(None, error=f"{type(exc).__name__}: {exc}")
        return ScrubResult(
            anonymized.text,
            Counter(item.entity_type for item in anonymized.items),
            spans=[(r.entity_type, r.start, r.end) for r in results],
        )

    def scrub(self, texts: Sequence[str], languages: Sequence[str]) -> list[ScrubResult]:
        """Scrub texts in order, each with the pipeline of its language. Only where it
        is needed: a text no recogniser can match stays as it is without the analyzer,
        and the named-entity model runs, batched per language, only on the texts its
        gate lets through."""
        results: list[ScrubResult | None] = [None] * len(texts)
        ner_rows: dict[str, list[tuple[int, list[str]]]] = {}
        ner_entities = set(self.config.ner.labels.values())
        for i, (text, language) in enumerate(zip(texts, languages, strict=True)):
            if language not in self.languages:
                results[i] = ScrubResult(None, error=f"no PII pipeline for language {language!r}")
                continue
            try:
                entities = self._possible_entities(text, language)
                if self._runs_ner(text, language):
                    entities = [e for e in self.entities if e in ner_entities or e in entities]
                    ner_rows.setdefault(language, []).append((i, entities))
                elif entities:
                    artifacts = self._no_ner_artifacts(language)
                    results[i] = self.scrub_one(text, language, artifacts, entities)
                else:
                    results[i] = ScrubResult(text)
            except Exception as exc:  # noqa: BLE001 - any engine error quarantines the record
                results[i] = ScrubResult(None, error=f"{type(exc).__name__}: {exc}")
        for language, rows in ner_rows.items():
            batch = [texts[i] for i, _ in rows]
            for (i, entities), artifacts in zip(
                rows, self._ner_artifacts(batch, language), strict=True
            ):
                if isinstance(artifacts, Exception):
                    results[i] = ScrubResult(None, error=f"{type(artifacts).__name__}: {artifacts}")
                else:
                    results[i] = self.scrub_one(texts[i], language, artifacts, entities)
        return results  # type: ignore[return-value]


@functools.lru_cache(maxsize=2)
def _cached_scrubber(config_json: str) -> PiiScrubber:
    return PiiScrubber(PiiConfig.model_validate_json(config_json))


def pii_scrubber(params: Mapping[str, Any]) -> PiiScrubber:
    """The scrubber for ``params:pii``, built once per process and configuration (the
    Japanese model takes seconds to load)."""
    config = PiiConfig.model_validate(dict(params))
    return _cached_scrubber(config.model_dump_json())

