"""``params:pii`` (conf/base/parameters_pii.yml) as strict pydantic models: one per
section (recognisers, the named-entity model, honorific names, given-name pairs, public
facts, brands) and ``PiiConfig`` over them; unknown keys are errors."""

from __future__ import annotations

from typing import Any

import regex
from pydantic import BaseModel, ConfigDict, Field

from so8t_kedro.records.pii.patterns import VALIDATORS
from so8t_kedro.records.pii.text import _expand_words


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
    # What the model read on after a name and is cut from its end (木下 + 直通, a direct line).
    trim_end: str | None = None
    # A full name from the dictionary where the model reads none: a token whose part of
    # speech matches full_name_pos[0] (a surname) right before one matching
    # full_name_pos[1] (a given name), both surfaces matching full_name_surface.
    full_name_pos: tuple[str, str] | None = None
    full_name_surface: str = ".+"


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
    # ... or a word of 2-3 kanji the dictionary lists as no surname but tags as a proper
    # noun matching this (鰐淵 in 同僚の鰐淵が: 名詞-固有名詞-一般), before a particle.
    relation_unlisted_proper_noun_pos: str | None = None
    # ... and such a word right before one of these honorifics, relation word or not
    # (隣の席の久保田くん): the diminutives said of private persons, not of firms.
    unlisted_proper_noun_honorifics: list[str] = Field(default_factory=list)
    # ... and after such a surname a kana given name that Sudachi cut across a particle
    # (今泉 + は + るき in 甥っ子の今泉はるきの): 2-4 kana of whole tokens, the last a noun,
    # then a particle, a mark or the end (not 今泉はまだ: まだ is no noun).
    relation_kana_run: bool = False
    # ... or a given name alone there, a token whose part of speech matches this
    # (孫の陽葵と, 娘のエミリーが: 固有名詞-人名-名, katakana names 人名-一般) ...
    given_name_alone_pos: str | None = None
    # ... and such a given name alone, relation word or not, when called (an interjection
    # of vocatives and a comma before it: ねえ、みさきって) or acted on (what follows it
    # starts with one of given_name_acted_on: ケイトに渡す, ゆうとに伝えて).
    vocatives: list[str] = Field(default_factory=list)
    # ... and after a relation word, a hiragana given name the dictionary knows as no
    # word and cuts into nouns (娘のひまりが: ひ + まり).
    cut_hiragana_given_name: bool = False
    given_name_acted_on: list[str] = Field(default_factory=list)
    # A kana given name that Sudachi reads across the honorific or as other words (り +
    # こ in 工藤りこちゃん, そう + たくん in 安田そうたくん): after a kanji word the
    # dictionary lists as a surname, a run of kana matching kana_run_surface right
    # before an honorific in the text itself, unless it matches kana_run_not.
    kana_run_surface: str | None = None
    kana_run_not: str | None = None
    honorifics: list[str] = Field(min_length=1)
    # What may follow a katakana given name that a kanji surname is carried over
    # (祖母の新井 + トメが): particles, marks and honorifics (a space or the end may too).
    katakana_given_name_followed_by: list[str] = Field(min_length=1)
    # Words that end a name a recogniser cut short, yet are not part of it (山田 + 様,
    # 田中 + 家): see names._PersonJoiner._carry_over_cut_name.
    not_name_rest: list[str] = Field(default_factory=list)
    # Titles a person's other mention may run into (岩崎部長: names._mention_pattern).
    titles_after_name: list[str] = Field(default_factory=list)
    score: float = Field(ge=0.0, le=1.0)


class KanaNameContextConfig(_Strict):
    """Where a hiragana given name is said of a person (``pii.kana_given_names.contexts``)."""

    # Group ``run``: the hiragana right before the cue (はると in はるとママ).
    regex: str
    # The run must be the name itself (a vocative at a quote's start), not end in it.
    whole: bool = False
    # Whether Sudachi's dictionary counts as a list of given names here too (it also
    # lists words such as せい, ため, なお as given names).
    dictionary: bool = True


class KanaGivenNamesConfig(_Strict):
    """Hiragana given names where the words around them say a person
    (``pii.kana_given_names``)."""

    languages: list[str]
    # A given name: its romaji (Hepburn, long vowels folded) is on this list, or (where a
    # context allows) the dictionary lists exactly the kana with this part of speech.
    romaji_given_names: list[str]
    dictionary_pos: str
    dictionary_min_length: int = Field(ge=1)
    contexts: list[KanaNameContextConfig] = Field(min_length=1)
    min_length: int = Field(ge=1)
    max_length: int = Field(ge=1)
    # Kana that are given names on a list but here far more often words (みな in みなさん).
    not_names: list[str] = Field(default_factory=list)
    score: float = Field(ge=0.0, le=1.0)


class PackageNamesConfig(_Strict):
    """A given-name list published inside an installed package: gender-guesser's copy of
    Jörg Michael's ``nam_dict.txt`` (~48,000 first names from ~55 countries, each with a
    frequency 1-13 per country), read as it is shipped."""

    package: str
    file: str
    # A name counts when its highest frequency in any country is at least this.
    min_frequency: int = Field(ge=1, le=13)


class JapaneseRomajiConfig(_Strict):
    surnames: list[str]
    given_names: list[str]


class LoneNameConfig(_Strict):
    """A given name alone inside a sentence of a first-person text
    (``pii.given_name_pairs.lone_name``)."""

    # The candidate, group ``given``: a capitalised word inside a sentence with no
    # capitalised word beside it.
    regex: str
    # The text must have one (my, our, I, me, we): the writer deals with people of their own.
    first_person: str
    # Capitalised words that are given names on the lists but, alone, more often
    # something else (Visa; months and days are alone_not).
    not_names: list[str]


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
    # A given name alone where the text deals with a person (Send Desmond ..., Hi Fiona,
    # it's Rosa, Wendell said ...): group ``given``, a name on the lists and not one of
    # ``alone_not`` (months, days, places that are also given names). One regex per form,
    # each searched on its own: one alternation of them all costs about four times as much.
    alone_regex: list[str]
    alone_not: list[str]
    # A given name with no cue beside it, in a first-person text (the neighbours Ruth and
    # Clive; Rania is driving Mon/Wed).
    lone_name: LoneNameConfig | None = None
    # A surname that a person span found before it left out (Brigid + Ó Súilleabháin),
    # matched right after a span ending in a Latin letter; the joiner carries the person
    # over it (names._PersonJoiner).
    surname_after: str
    # Japanese names in romaji (parameters_pii_japanese_romaji.yml): a surname and a given
    # name of these lists, in either order, capitalised or in capitals (Kimura Haruka,
    # HARUTO SUZUKI).
    japanese_romaji: JapaneseRomajiConfig | None = None
    score: float = Field(ge=0.0, le=1.0)


class PublicFactsConfig(_Strict):
    """Deny by default for persons (``pii.public_facts``): a person stays only when it is
    a public figure asked about as a public fact, that is when the text has no private
    context (``private``, ``private_before``, another entity) and either the person is
    on the public-figure gazetteer (``allow_list``) or the text gives positive evidence
    right next to the name that the person is public (``public_before``: 第32代総理大臣,
    President, the novel by; ``public_after``: の代表作, が書いた小説, 's theory of
    relativity, won the Nobel Prize), or in the sentence that holds it (``public_sentence``:
    a public deed, a historical date, a question about the person's legacy). No private
    context alone never keeps a name."""

    entities: list[str]
    # The gazetteer of public figures, category -> names (parameters_pii_allow_list.yml).
    allow_list: dict[str, list[str]]
    # Removed from a detected name and from each listed name before they are compared
    # (titles, honorifics of public roles, spaces and middle dots): Professor Einstein,
    # 大谷翔平選手 and アルベルト アインシュタイン match their listed forms.
    allow_list_ignore: str
    # Searched ending right before a person: a courtesy title that makes a surname a
    # private person's (Mr Lincoln, Dr. Jung), not the listed figure's.
    not_listed_after: str | None = None
    # Per language: what makes the text about a private person, searched in the whole
    # text (private); searched right before a person, ending there: a request to
    # contact or act on the person (private_before). {{name}} is the alternation of
    # words[name], as in RecognizerConfig.words.
    private: dict[str, str]
    words: dict[str, list[str]] = Field(default_factory=dict)
    private_before: dict[str, str] = Field(default_factory=dict)
    # Positive evidence of a public figure next to a person: searched ending right
    # before the person (public_before) and matched right after it (public_after).
    public_before: dict[str, str] = Field(default_factory=dict)
    public_after: dict[str, str] = Field(default_factory=dict)
    # ... and searched in the sentence that holds the person, its persons' characters
    # replaced by \uE000 as for ``private`` (a deed: discovered, 発見した; a date before
    # living memory: in 1854, 明治; a question about a legacy: Why is \uE000 remembered).
    public_sentence: dict[str, str] = Field(default_factory=dict)
    # Any entity of another type in the text (a phone, an address, an account) is
    # private context.
    other_entities_are_private: bool = True

    def model_post_init(self, _context: Any) -> None:
        for key in ("private", "private_before", "public_before", "public_after",
                    "public_sentence"):
            for pattern in getattr(self, key).values():
                named = set(regex.findall(r"\{\{(\w+)\}\}", pattern))
                missing = sorted(named - set(self.words))
                if missing:
                    raise ValueError(f"pii.public_facts.{key}: no words for {missing}")

    def expanded(self, key: str) -> dict[str, str]:
        """The regexes of ``key`` per language, every {{name}} replaced by its words."""
        return {language: _expand_words(pattern, self.words)
                for language, pattern in getattr(self, key).items()}


class PublicPlacesConfig(_Strict):
    """Addresses and phone numbers of public places asked about as public facts
    (``pii.public_places``): kept when the entity's sentence names a public owner right
    before it (``owner_before``, searched with the entity's characters replaced by
    \uE000) or a public line (``public_line``), the text has no ``private`` signal and
    no entity of another type. {{name}} as in RecognizerConfig.words."""

    entities: list[str]
    words: dict[str, list[str]] = Field(default_factory=dict)
    owner_before: dict[str, str]
    public_line: dict[str, str] = Field(default_factory=dict)
    private: dict[str, str]

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


class FieldsConfig(_Strict):
    """Table columns and quoted record fields named after an entity type (``pii.fields``):
    ``names`` (entity -> a regex the whole column or field name matches) and ``values``
    (entity -> a regex the whole cell or value must match to be taken)."""

    languages: list[str]
    names: dict[str, str]
    values: dict[str, str]
    # A column whose name is only "name" is a person's when the same header also has a
    # column matching ``contact_column`` (Name, Email, Phone): ``bare_name_column``.
    bare_name_column: str | None = None
    contact_column: str | None = None
    score: float = Field(ge=0.0, le=1.0)

    def model_post_init(self, _context: Any) -> None:
        if (self.bare_name_column is None) != (self.contact_column is None):
            raise ValueError("pii.fields: bare_name_column and contact_column go together")
        if set(self.names) != set(self.values):
            raise ValueError("pii.fields: names and values must list the same entity types, "
                             f"not {sorted(self.names)} and {sorted(self.values)}")


class AddressPartsConfig(_Strict):
    """What an address span is carried over (``pii.address_parts``): ``before``, a regex
    that ends right where the span starts, and ``after``, one that starts right where it
    ends; both may name ``words`` lists as {{name}}."""

    before: str
    after: str
    words: dict[str, list[str]] = Field(default_factory=dict)


class PiiConfig(_Strict):
    """``params:pii`` (conf/base/parameters_pii.yml); unknown keys are errors."""

    placeholders: dict[str, str]
    score_threshold: float = Field(ge=0.0, le=1.0)
    # Addresses that identify no one (public DNS resolvers: 1.1.1.1, 8.8.8.8), as data.
    public_ip_addresses: list[str] = Field(default_factory=list)
    public_places: PublicPlacesConfig | None = None
    # Entity type -> a regex of values that are nobody's (placeholders, values reserved
    # for documentation), matched against the whole found span.
    documentation_values: dict[str, str] = Field(default_factory=dict)
    ner: NerConfig
    honorific_names: HonorificNamesConfig
    kana_given_names: KanaGivenNamesConfig | None = None
    given_name_pairs: GivenNamePairsConfig
    public_facts: PublicFactsConfig
    brands: BrandsConfig
    recognizers: list[RecognizerConfig]
    fields: FieldsConfig | None = None
    address_parts: AddressPartsConfig | None = None

    def model_post_init(self, _context: Any) -> None:
        entities = ({r.entity for r in self.recognizers} | set(self.ner.labels.values())
                    | set(self.fields.names if self.fields else ()))
        missing = sorted(entities - set(self.placeholders))
        if missing:
            raise ValueError(f"pii.placeholders has no placeholder for {missing}")
        unknown_types = sorted(set(self.documentation_values) - set(self.placeholders))
        if unknown_types:
            raise ValueError(f"pii.documentation_values: unknown entity type(s) {unknown_types}")
        unknown = sorted({r.validator for r in self.recognizers} - {None, *VALIDATORS})
        if unknown:
            raise ValueError(f"pii.recognizers: unknown validator(s) {unknown}; known: "
                             f"{sorted(VALIDATORS)}")

    @property
    def entity_types(self) -> list[str]:
        """Every entity type, in the order of ``placeholders``."""
        return list(self.placeholders)
