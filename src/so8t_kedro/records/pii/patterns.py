"""Validated pattern recognisers: the checks regexes cannot make (Luhn for cards, the My
Number check digit, IBAN mod 97, ``ipaddress``, digit counts of phones and accounts, a
form label that is no name), named in ``VALIDATORS``, and the Presidio pattern recogniser
that runs a configured recogniser's regexes (``pii.recognizers``: My Number, cards,
phones, accounts, passports, licences, IP addresses, secrets, ...) through one."""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING

import regex
from presidio_analyzer import Pattern, PatternRecognizer

from so8t_kedro.records.pii.text import (
    _PERSON_NAME_POS,
    _sudachi_dictionary,
    _sudachi_tokenizer,
)

if TYPE_CHECKING:
    from so8t_kedro.records.pii.config import RecognizerConfig


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
    255.255.255.255, a subnet mask (255.255.255.0), nor a network written with its
    prefix length (10.0.0.0/8, 169.254.0.0/16, fe80::/10: the address is the network's
    own, a range, not a host; 192.168.1.23/24 is a host), which identify no one."""
    try:
        interface = ipaddress.ip_interface(text)
    except ValueError:
        return False
    address = interface.ip
    if ("/" in text and interface.network.prefixlen < interface.max_prefixlen
            and address == interface.network.network_address):
        return False
    return not (address.is_loopback or address.is_unspecified or address.is_multicast
                or _is_subnet_mask(address))


def uk_driving_licence_valid(text: str) -> bool:
    """A DVLA licence number's birth date: decade any digit, month 01-12 (51-62 for a
    woman), day 01-31; the year digit any. A 16-character run of capitals and digits
    with no such date is a code of another kind."""
    month, day = int(text[6:8]), int(text[8:10])
    return (1 <= month <= 12 or 51 <= month <= 62) and 1 <= day <= 31


# The share of neighbouring characters of different classes (capital, small letter,
# digit, other) from which a token reads as random, not as words: a random base-62
# string changes class at ~2 in 3 characters, a CamelCase name at ~1 in 3.
_RANDOM_CLASS_CHANGES = 0.6


def _char_class(ch: str) -> str:
    return "A" if ch.isupper() else "a" if ch.islower() else "0" if ch.isdigit() else "-"


def mixed_class_token(text: str) -> bool:
    """Whether a token changes character class often enough to be random (a key, a
    token), not a name built of words and numbers (ResNet50V2Weights, iPhone15Pro)."""
    changes = sum(_char_class(a) != _char_class(b) for a, b in itertools.pairwise(text))
    return changes >= _RANDOM_CLASS_CHANGES * (len(text) - 1)


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


_COMMON_NOUN_POS = regex.compile(r"^名詞-普通名詞")


def ja_name_not_common_noun(text: str) -> bool | None:
    """False for a Japanese word that Sudachi reads as a common noun and its dictionary
    lists as no person name (直通 in 担当者直通:03-..., 変更 in 担当者変更): a form label
    before an ordinary word. None (no opinion) otherwise: 酒井, 平野 (a common noun and
    a surname), katakana names."""
    tokens = _sudachi_tokenizer().tokenize(text)
    if len(tokens) == 0:
        return None
    first = tokens[0]
    surface = first.surface()
    # ... or a katakana word read as one common noun, the whole match (アドレス in
    # 担当アドレス: a form label before an ordinary word, not ヤマダタロウ).
    katakana = (len(tokens) == 1 and regex.fullmatch(r"[\p{Katakana}ー]+", surface)
                is not None)
    if not katakana and not regex.fullmatch(r"[\p{Han}々]+", surface):
        return None
    return _common_noun_and_no_name(first)


def ja_hiragana_word_not_common_noun(text: str) -> bool | None:
    """False for a hiragana word Sudachi reads as one common noun that its dictionary
    lists as no person name (おむつ, おもちゃ in 娘のおむつが); None otherwise (さくら, ゆうと,
    listed as names too). Not used where a name in hiragana is likely whatever the
    dictionary says (長女 ひなた): ひなた and みなと are common nouns there."""
    tokens = _sudachi_tokenizer().tokenize(text)
    if len(tokens) != 1 or not regex.fullmatch(r"\p{Hiragana}+", tokens[0].surface()):
        return None
    return _common_noun_and_no_name(tokens[0])


def unknown_word_or_name(word: str) -> bool:
    """Whether the dictionary lists ``word`` as a person name, or does not list it at all
    (ラジェシュ; not コーヒー): a katakana word found where a name is listed."""
    entries = _dictionary_entries(word)
    return not entries or _listed_as_name(entries)


def listed_as_common_noun(word: str) -> bool:
    """Whether the dictionary lists ``word`` as a common noun (it lists English words too:
    mark, grace, bill; not aiden or becca)."""
    return any(_COMMON_NOUN_POS.search("-".join(m.part_of_speech()))
               for m in _dictionary_entries(word))


def _common_noun_and_no_name(token) -> bool | None:
    if not _COMMON_NOUN_POS.search("-".join(token.part_of_speech())):
        return None
    return None if _listed_as_name(_dictionary_entries(token.surface())) else False


def _dictionary_entries(word: str) -> list:
    """The dictionary's entries for exactly ``word``."""
    return [m for m in _sudachi_dictionary().lookup(word) if m.surface() == word]


def _listed_as_name(entries: list) -> bool:
    return any(_PERSON_NAME_POS.search("-".join(m.part_of_speech())) for m in entries)


# Validator name (conf) -> check of the matched text. True raises a match to score 1.0,
# False drops it, None leaves its score.
VALIDATORS: dict[str, Callable[[str], bool | None]] = {
    "luhn": lambda text: luhn_valid(_digits(text)),
    "my_number": lambda text: my_number_valid(_digits(text)),
    "iban": iban_valid,
    "ip_address": _ip_valid,
    "digits_10_11": lambda text: len(_digits(text)) in (10, 11),
    "digits_8_15": lambda text: 8 <= len(_digits(text)) <= 15,
    "ja_name_not_common_noun": ja_name_not_common_noun,
    "ja_hiragana_word_not_common_noun": ja_hiragana_word_not_common_noun,
    "ja_listed_as_name": lambda text: _listed_as_name(_dictionary_entries(text)),
    "uk_driving_licence": uk_driving_licence_valid,
    "mixed_class_token": mixed_class_token,
}


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
