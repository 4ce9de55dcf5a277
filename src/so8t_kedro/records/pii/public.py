"""What stays although a recogniser found it: public figures asked about as public facts
(``pii.public_facts``: on the gazetteer, or with a public role or work named next to the
name or a public deed, date or legacy in its sentence, and no private context in the
text), brands and firms named after people
(``pii.brands``), addresses that identify no one (``pii.public_ip_addresses``:
public resolvers), placeholders and example values that are nobody's
(``pii.documentation_values``: <YOUR_API_KEY>, user@example.com, 03-0000-0000), and the
addresses and lines of public places asked about as public facts (``pii.public_places``)."""

from __future__ import annotations

import ipaddress
import unicodedata
from collections.abc import Mapping, Sequence

import regex
from presidio_analyzer import RecognizerResult

from so8t_kedro.records.pii.config import BrandsConfig, PublicFactsConfig, PublicPlacesConfig

# What a person's characters become before ``public_facts.private`` is searched: no
# letter (a private word inside a name is part of the name: 兄 in 中大兄皇子), and a
# mark the private regexes can name (\uE000) where the person's place matters (a
# self-introduction: 田中花子です, I'm Dana Reyes).
PERSON_MARK = "\ue000"

# How far around a detected name a listed name is looked for (GiNZA reads 信長 alone
# inside 織田信長; a pair recogniser reads Curie inside Marie Curie).
_LISTED_NAME_REACH = 12
_LATIN_PAIR = regex.compile(r"\p{Latin}\p{Latin}")
# Where a sentence ends: ``public_sentence`` evidence counts for the persons of its own
# sentence only (a second sentence may name someone else).
# A title's dot (Dr. Livingstone) ends no sentence.
_SENTENCE_END = regex.compile(
    r"[。．！？!?\n]|(?<!(?<![A-Za-z])(?:Dr|Mr|Mrs|Ms|Mx|St|Prof|Jr|Sr))\.(?=\s)")


class _PublicFacts:
    """Deny by default for persons (``pii.public_facts``), compiled."""

    def __init__(self, config: PublicFactsConfig):
        self.config = config
        (self._private, self._private_before, self._public_before, self._public_after,
         self._public_sentence) = (
            {language: regex.compile(pattern)
             for language, pattern in config.expanded(key).items()}
            for key in ("private", "private_before", "public_before", "public_after",
                        "public_sentence")
        )
        self._ignore = regex.compile(config.allow_list_ignore)
        self._not_listed_after = (regex.compile(config.not_listed_after)
                                  if config.not_listed_after else None)
        names = [name for names in config.allow_list.values() for name in names]
        # Characters known by a courtesy title (Dr. Watson, Mr. Darcy) are listed with it
        # and found only with it: "Watson" alone or "Mr. Watson" is someone else.
        titled = {name for name in names if self._titled(name)}
        self._listed = frozenset(self._key(name) for name in names if name not in titled)
        self._listed_with_title = frozenset(map(_titled_key, titled))

    def _titled(self, name: str) -> bool:
        space = name.find(" ")
        return (self._not_listed_after is not None and space > 0
                and self._not_listed_after.search(name[: space + 1]) is not None)

    def _key(self, name: str) -> str:
        """A name as it is compared with the gazetteer: NFKC, without the titles, public
        role words, spaces and dots of ``allow_list_ignore``, case folded."""
        return self._ignore.sub("", unicodedata.normalize("NFKC", name)).casefold()

    def is_listed(self, text: str, person: RecognizerResult) -> bool:
        """Whether the person is on the gazetteer: its span, or a span of the text
        around it that starts and ends at a word's edge (a Latin letter is not cut),
        is a listed name once normalised (信長 read inside 織田信長 is 織田信長); after a
        courtesy title (``not_listed_after``: Mr Lincoln is someone else) only a name
        listed with its title (Dr. Watson)."""
        title = (self._not_listed_after.search(text, 0, person.start)
                 if self._not_listed_after is not None else None)
        if title is not None:
            return _titled_key(text[title.start() : person.end]) in self._listed_with_title
        if self._key(text[person.start : person.end]) in self._listed:
            return True
        for start in range(max(0, person.start - _LISTED_NAME_REACH), person.start + 1):
            if start > 0 and _latin_letters(text[start - 1], text[start]):
                continue
            for end in range(person.end, min(len(text), person.end + _LISTED_NAME_REACH) + 1):
                if end < len(text) and _latin_letters(text[end - 1], text[end]):
                    continue
                if (start, end) != (person.start, person.end) and (
                        self._key(text[start:end]) in self._listed):
                    return True
        return False

    def has_public_evidence(self, text: str, language: str, person: RecognizerResult) -> bool:
        """Whether a public role or a public work is named right next to the person
        (``public_before``: 第32代総理大臣, President, the novel by; ``public_after``:
        の代表作, が書いた小説, 's theory of relativity, won the Nobel Prize)."""
        before = self._public_before.get(language)
        if before is not None and before.search(text, 0, person.start) is not None:
            return True
        after = self._public_after.get(language)
        return after is not None and after.match(text, person.end) is not None

    def has_public_sentence(self, marked: str, language: str, person: RecognizerResult) -> bool:
        """Whether the sentence that holds the person (in ``marked``: the text with every
        person's characters replaced by ``PERSON_MARK``) names a public deed, a
        historical date or a question about the person's legacy (``public_sentence``)."""
        pattern = self._public_sentence.get(language)
        if pattern is None:
            return False
        start, end = _sentence_of(marked, person)
        return pattern.search(marked, start, end) is not None

    def has_private_context(
        self, text: str, marked: str, language: str, persons: Sequence[RecognizerResult],
        others: Sequence[RecognizerResult],
    ) -> bool:
        """Whether the text names a private context for its persons: another entity
        (``others``: a phone, an account), a request to contact or act on a person right
        before it (``private_before``), or a word of a private relation, of contact or
        personal data, of first-person involvement or of today (``private``: my,
        address, owes me, 同僚, 住所, 連絡, an honorific) outside the persons, whose
        characters are replaced by ``PERSON_MARK`` in ``marked`` (兄 in 中大兄皇子 is no
        brother). A language without a ``private`` regex is all private: nothing is kept."""
        if others and self.config.other_entities_are_private:
            return True
        private = self._private.get(language)
        if private is None:
            return True
        before = self._private_before.get(language)
        if before is not None and any(before.search(text, 0, person.start) is not None
                                      for person in persons):
            return True
        return private.search(marked) is not None

    def public_persons(
        self, text: str, language: str, persons: Sequence[RecognizerResult],
        others: Sequence[RecognizerResult] = (),
    ) -> list[RecognizerResult]:
        """The persons that stay: none in a text with private context; otherwise those
        on the gazetteer or with public evidence next to them or in their sentence. Every
        other person goes, whatever the text: deny by default. ``persons`` are whole
        names (:meth:`~so8t_kedro.records.pii.names._PersonJoiner.join`: no two overlap)."""
        if not persons:
            return []
        marked = _marked(text, persons)
        if self.has_private_context(text, marked, language, persons, others):
            return []
        return [person for person in persons
                if self.is_listed(text, person)
                or self.has_public_evidence(text, language, person)
                or self.has_public_sentence(marked, language, person)]


def _titled_key(name: str) -> str:
    """A titled name as compared with the titled entries: NFKC, no dots or spaces,
    case folded (Dr Watson = Dr. Watson)."""
    return regex.sub(r"[\s.]", "", unicodedata.normalize("NFKC", name)).casefold()


def _sentence_of(text: str, span: RecognizerResult) -> tuple[int, int]:
    """(start, end) of the sentence that holds ``span`` (``_SENTENCE_END``)."""
    start = max((m.end() for m in _SENTENCE_END.finditer(text, 0, span.start)), default=0)
    end_match = _SENTENCE_END.search(text, span.end)
    return start, len(text) if end_match is None else end_match.end()


def _marked(text: str, persons: Sequence[RecognizerResult]) -> str:
    """The text with every person's (or other entity's) characters replaced by
    ``PERSON_MARK``."""
    rest = list(text)
    for person in persons:
        rest[person.start : person.end] = PERSON_MARK * (person.end - person.start)
    return "".join(rest)


def _latin_letters(left: str, right: str) -> bool:
    """Whether a cut between two characters would split a Latin word."""
    return _LATIN_PAIR.fullmatch(left + right) is not None


class _Brands:
    """Brands and firms named after people (``pii.brands``), compiled."""

    def __init__(self, config: BrandsConfig):
        brands = sorted([*config.names, *config.titled_names], key=len, reverse=True)
        self._brand_names = regex.compile(
            r"(?<![\p{Latin}\d])(?:" + "|".join(map(regex.escape, brands)) + r")(?![\p{Latin}\d])"
        ) if brands else None
        self._product_after = regex.compile(
            r" (?:" + "|".join(map(regex.escape, config.product_words)) + r")(?![\p{L}])"
        ) if config.product_words else None
        business = sorted(config.business_words, key=len, reverse=True)
        self._business_words = regex.compile(
            "|".join(map(regex.escape, business))) if business else None
        suffixes = sorted(config.business_suffixes, key=len, reverse=True)
        self._business_suffixes = regex.compile(
            "|".join(map(regex.escape, suffixes))) if suffixes else None

    def is_brand(self, text: str, result: RecognizerResult) -> bool:
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


# How far before an address's sentence its public owner may be named (characters).
_OWNER_REACH = 80


class _PublicPlaces:
    """``pii.public_places``, compiled: addresses and phone numbers of public places."""

    def __init__(self, config: PublicPlacesConfig):
        self.entities = frozenset(config.entities)
        self._owner_before, self._public_line, self._private = (
            {language: regex.compile(pattern) for language, pattern in config.expanded(key).items()}
            for key in ("owner_before", "public_line", "private"))

    def public(self, text: str, language: str,
               results: Sequence[RecognizerResult]) -> list[RecognizerResult]:
        """The results that are a public place's address or line: none in a text with
        a private signal or an entity of another type; otherwise those whose sentence
        names a public owner right before them or a public line."""
        private = self._private.get(language)
        if (private is None or private.search(text) is not None
                or any(r.entity_type not in self.entities for r in results)):
            return []
        return [r for r in results if self._is_public(text, language, r)]

    def _is_public(self, text: str, language: str, result: RecognizerResult) -> bool:
        marked = _marked(text, [result])
        start, end = _sentence_of(marked, result)
        owner = self._owner_before.get(language)
        line = self._public_line.get(language)
        # The owner may close the sentence before (What's the address of the White House?
        # 1600 Pennsylvania Ave NW?).
        owner_from = max(0, start - _OWNER_REACH)
        return ((owner is not None
                 and owner.search(marked, owner_from, result.start + 1) is not None)
                or (line is not None and line.search(marked, start, end) is not None))


class _PublicAddresses:
    """``pii.public_ip_addresses``: addresses that identify no one."""

    def __init__(self, addresses: Sequence[str]):
        self._public_ips = frozenset(ipaddress.ip_address(a) for a in addresses)

    def is_public_ip(self, text: str) -> bool:
        """Whether an address (with or without a prefix length) is one of
        ``public_ip_addresses``: a public resolver, no one's host."""
        try:
            address = ipaddress.ip_interface(text).ip
        except ValueError:
            return False
        return address in self._public_ips


class _DocumentationValues:
    """``pii.documentation_values``, compiled: per entity type, the values that are
    nobody's although a recogniser found them (a template's placeholder, a number or
    key reserved for examples)."""

    def __init__(self, patterns: Mapping[str, str]):
        self._patterns = {entity: regex.compile(pattern) for entity, pattern in patterns.items()}

    def is_documentation_value(self, text: str, result: RecognizerResult) -> bool:
        """Whether the whole span is one of its type's documentation values."""
        pattern = self._patterns.get(result.entity_type)
        return pattern is not None and pattern.fullmatch(text, result.start, result.end) is not None
