"""PII scrubbing: Presidio's analyzer and anonymizer with GiNZA's Japanese NER.

Person names come from a spaCy named-entity model (GiNZA's ``ja_ginza`` for Japanese,
each name confirmed by a Sudachi dictionary name), from Sudachi names right before an
honorific (松本先生), and from English patterns; addresses, phone numbers, e-mails, card
and bank accounts, My Numbers, passports, driver's licences, IP addresses and secrets from
pattern recognisers whose regexes and scores live in ``conf/base/parameters_pii.yml``.
Presidio's anonymizer replaces every entity by its typed placeholder (``<PERSON>``,
``<ADDRESS>``, ...), resolving overlaps. Nothing is downloaded at run time.

- :mod:`.engine`: the Presidio engine, batching, ``ScrubResult`` for the quarantine;
- :mod:`.processes`: the engine in worker processes, one per core, for large batches;
- :mod:`.config`: ``params:pii`` as strict models;
- :mod:`.patterns`: the validators (Luhn, My Number, IBAN, ``ipaddress``, ...) and the
  validated pattern recogniser;
- :mod:`.names`: the person-name recognisers (NER, Japanese honorific / relation / kana
  rules, English given names);
- :mod:`.public`: what stays (public figures on the gazetteer or with a public role or
  work next to the name, in a text without private context; brands; public
  resolvers);
- :mod:`.text`: shared text helpers (``{{name}}`` word lists, Sudachi tokens).
"""

from so8t_kedro.records.pii.config import (
    BrandsConfig,
    GivenNamePairsConfig,
    HonorificNamesConfig,
    NerConfig,
    PackageNamesConfig,
    PatternConfig,
    PiiConfig,
    PublicFactsConfig,
    RecognizerConfig,
)
from so8t_kedro.records.pii.engine import BLANK_MODEL, PiiScrubber, ScrubResult, pii_scrubber
from so8t_kedro.records.pii.names import package_given_names
from so8t_kedro.records.pii.patterns import VALIDATORS, iban_valid, luhn_valid, my_number_valid
from so8t_kedro.records.pii.processes import ScrubberPool
from so8t_kedro.records.pii.public import PERSON_MARK

__all__ = [
    "BLANK_MODEL",
    "PERSON_MARK",
    "VALIDATORS",
    "BrandsConfig",
    "GivenNamePairsConfig",
    "HonorificNamesConfig",
    "NerConfig",
    "PackageNamesConfig",
    "PatternConfig",
    "PiiConfig",
    "PiiScrubber",
    "PublicFactsConfig",
    "RecognizerConfig",
    "ScrubResult",
    "ScrubberPool",
    "iban_valid",
    "luhn_valid",
    "my_number_valid",
    "package_given_names",
    "pii_scrubber",
]
