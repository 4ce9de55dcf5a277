"""What stays although a recogniser found it: persons asked about as public facts, with
no private context in the text (``pii.public_facts``), brands and firms named after
people (``pii.brands``), and addresses that identify no one (``pii.public_ip_addresses``:
public resolvers)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import regex
from presidio_analyzer import RecognizerResult

from so8t_kedro.records.pii.config import BrandsConfig, PublicFactsConfig

# What a person's characters become before ``public_facts.private`` is searched: no
# letter (a private word inside a name is part of the name: 兄 in 中大兄皇子), and a
# mark the private regexes can name (\uE000) where the person's place matters (a
# self-introduction: 田中花子です, I'm Dana Reyes).
PERSON_MARK = "\ue000"


class _PublicFacts:
    """The public-fact / private-context rule of ``pii.public_facts``, compiled."""

    def __init__(self, config: PublicFactsConfig):
        self.config = config
        (self._public_frame, self._private, self._identity_only, self._works_after,
         self._private_before) = (
            {language: regex.compile(pattern)
             for language, pattern in config.expanded(key).items()}
            for key in ("frame", "private", "identity_only", "works_after", "private_before")
        )

    def asks_public_facts(
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
        if others and self.config.other_entities_are_private:
            return False
        frame = self._public_frame.get(language)
        if frame is None:
            return False
        identity_only = self._identity_only.get(language)
        works_after = self._works_after.get(language)
        if identity_only is not None and identity_only.search(text) is not None:
            return False
        framed = not self.config.frame_required or frame.search(text) is not None
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
