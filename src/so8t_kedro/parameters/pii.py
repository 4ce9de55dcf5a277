"""``conf/base/parameters_pii.yml`` and the word lists it interpolates
(``parameters_pii_*.yml``)."""

from __future__ import annotations

from so8t_kedro.parameters._base import Strict
from so8t_kedro.records.pii import PiiConfig


class PiiFile(Strict):
    # PiiConfig (records/pii/config.py) is the scrubber's own model.
    pii: PiiConfig


class PiiAllowListFile(Strict):
    # category -> names of public figures
    pii_allow_list: dict[str, list[str]]


class PiiBrandsFile(Strict):
    pii_brands: list[str]


class PiiGivenNamesFile(Strict):
    pii_given_names: list[str]
    pii_not_given_names: list[str]


class PiiGivenNamesRegionalFile(Strict):
    pii_given_names_regional: dict[str, list[str]]


class PiiJapaneseRomajiFile(Strict):
    pii_japanese_surnames_romaji: list[str]
    pii_japanese_given_names_romaji: list[str]


class PiiRoleNounsFile(Strict):
    pii_role_nouns: list[str]
