"""PII scrubbing: Presidio's analyzer and anonymizer with GiNZA's Japanese NER.

Person names come from a spaCy named-entity model (GiNZA's ``ja_ginza`` for Japanese);
addresses, phone numbers, e-mails, card and bank accounts, My Numbers, passports,
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
import ipaddress
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import regex
import spacy
from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry
from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import SpacyRecognizer
from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig
from pydantic import BaseModel, ConfigDict, Field
from spacy.tokens import Doc

logger = logging.getLogger(__name__)

BLANK_MODEL = "blank"


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


def _ip_valid(text: str) -> bool:
    try:
        ipaddress.ip_interface(text)
    except ValueError:
        return False
    return True


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


# Validator name (conf) -> check of the matched text. True raises a match to score 1.0,
# False drops it.
VALIDATORS: dict[str, Callable[[str], bool]] = {
    "luhn": lambda text: luhn_valid(_digits(text)),
    "my_number": lambda text: my_number_valid(_digits(text)),
    "iban": iban_valid,
    "ip_address": _ip_valid,
    "digits_10_11": lambda text: len(_digits(text)) in (10, 11),
    "digits_8_15": lambda text: 8 <= len(_digits(text)) <= 15,
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


class NerConfig(_Strict):
    models: dict[str, str]
    exclude: list[str]
    labels: dict[str, str]
    score: float = Field(ge=0.0, le=1.0)
    reject: str
    run_if_sudachi_pos: dict[str, str]
    batch_size: int = Field(ge=1)


class PiiConfig(_Strict):
    """``params:pii`` (conf/base/parameters_pii.yml); unknown keys are errors."""

    placeholders: dict[str, str]
    score_threshold: float = Field(ge=0.0, le=1.0)
    allow_list: list[str]
    ner: NerConfig
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
            patterns=[Pattern(p.name, p.regex, p.score) for p in config.patterns],
            global_regex_flags=flags,
        )
        self._validator = VALIDATORS[config.validator] if config.validator else None

    def validate_result(self, pattern_text: str) -> bool | None:
        return self._validator(pattern_text) if self._validator else None


class _NerRecognizer(SpacyRecognizer):
    """Presidio's spaCy recogniser, dropping entities that match ``ner.reject``."""

    def __init__(self, language: str, config: NerConfig):
        super().__init__(
            supported_language=language,
            supported_entities=sorted(set(config.labels.values())),
            ner_strength=config.score,
        )
        self._reject = regex.compile(config.reject)

    def analyze(self, text, entities, nlp_artifacts=None):
        results = super().analyze(text, entities, nlp_artifacts)
        return [r for r in results if not self._reject.search(text[r.start : r.end])]


def _sudachi_gate(pos_pattern: str) -> Callable[[str], bool]:
    """Whether a text has a token whose Sudachi part of speech (e.g.
    名詞-固有名詞-人名-姓) matches: SudachiPy + SudachiDict-core (installed with ja-ginza)
    tokenise ~50x faster than the named-entity model runs."""
    import sudachipy  # only with a Japanese gate configured

    dictionary = sudachipy.Dictionary(dict="core")
    pattern = regex.compile(pos_pattern)
    matches = dictionary.pos_matcher(lambda pos: bool(pattern.search("-".join(pos))))
    tokenizer = dictionary.create(sudachipy.SplitMode.C)
    return lambda text: any(matches(m) for m in tokenizer.tokenize(text))


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
        registry = RecognizerRegistry(supported_languages=languages)
        for language, nlp in pipelines.items():
            if "ner" in nlp.pipe_names:
                registry.add_recognizer(_NerRecognizer(language, config.ner))
        for recognizer in config.recognizers:
            for language in recognizer.languages:
                if language in pipelines:
                    registry.add_recognizer(_ValidatedPatternRecognizer(recognizer, language))
        self.languages = languages
        self._gates = {
            language: _sudachi_gate(pos) for language, pos in config.ner.run_if_sudachi_pos.items()
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

    def _docs(self, texts: list[str], language: str) -> list[Any]:
        """spaCy docs of a batch, the named-entity model run only where it is needed:
        never for a pipeline without one, and with a ``run_if_sudachi_pos`` gate only for texts with a
        matching token (for Japanese: a dictionary person name, 人名); the model costs
        ~50x the tokenizer. The other texts get an empty doc: pattern recognisers read
        the text, and tokens matter only to context words, which none of ours has."""
        nlp = self.analyzer.nlp_engine.nlp[language]
        empty = Doc(nlp.vocab, words=[])
        docs = [empty] * len(texts)
        if "ner" not in nlp.pipe_names:
            return docs
        gate = self._gates.get(language)
        wanted = [i for i, text in enumerate(texts) if gate is None or gate(text)]
        ner_docs = nlp.pipe([texts[i] for i in wanted], batch_size=self.config.ner.batch_size)
        for i, doc in zip(wanted, ner_docs, strict=True):
            docs[i] = doc
        return docs

    def _nlp_artifacts(self, texts: list[str], language: str) -> Iterator[Any]:
        """NLP artifacts per text, batched; a text whose batch failed is retried alone,
        and one that still fails yields its exception."""
        engine = self.analyzer.nlp_engine
        size = self.config.ner.batch_size
        for start in range(0, len(texts), size):
            batch = texts[start : start + size]
            try:
                docs = self._docs(batch, language)
            except Exception:  # noqa: BLE001 - isolate the failing text below
                docs = []
                for text in batch:
                    try:
                        docs.extend(self._docs([text], language))
                    except Exception as exc:  # noqa: BLE001 - the record is quarantined
                        docs.append(exc)
            for doc in docs:
                # Presidio's own doc -> artifacts conversion (entity mapping, scores).
                yield doc if isinstance(doc, Exception) else engine._doc_to_nlp_artifact(
                    doc, language
                )

    def scrub_one(self, text: str, language: str, artifacts: Any = None) -> ScrubResult:
        """Scrub one text (NLP artifacts computed here unless given)."""
        if language not in self.languages:
            return ScrubResult(None, error=f"no PII pipeline for language {language!r}")
        try:
            if artifacts is None:
                artifacts = self.analyzer.nlp_engine.process_text(text, language)
            results = self.analyzer.analyze(
                text=text,
                language=language,
                entities=self.entities,
                nlp_artifacts=artifacts,
                score_threshold=self.config.score_threshold,
                allow_list=self.config.allow_list,
            )
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
        """Scrub texts in order, each with the pipeline of its language, batched per
        language through ``nlp.pipe``."""
        results: list[ScrubResult | None] = [None] * len(texts)
        by_language: dict[str, list[int]] = {}
        for i, language in enumerate(languages):
            by_language.setdefault(language, []).append(i)
        for language, rows in by_language.items():
            if language not in self.languages:
                for i in rows:
                    results[i] = self.scrub_one(texts[i], language)
                continue
            batch = [texts[i] for i in rows]
            for i, artifacts in zip(rows, self._nlp_artifacts(batch, language), strict=True):
                if isinstance(artifacts, Exception):
                    error = f"{type(artifacts).__name__}: {artifacts}"
                    results[i] = ScrubResult(None, error=error)
                else:
                    results[i] = self.scrub_one(texts[i], language, artifacts)
        return results  # type: ignore[return-value]


@functools.lru_cache(maxsize=2)
def _cached_scrubber(config_json: str) -> PiiScrubber:
    return PiiScrubber(PiiConfig.model_validate_json(config_json))


def pii_scrubber(params: Mapping[str, Any]) -> PiiScrubber:
    """The scrubber for ``params:pii``, built once per process and configuration (the
    Japanese model takes seconds to load)."""
    config = PiiConfig.model_validate(dict(params))
    return _cached_scrubber(config.model_dump_json())

