"""The PII engine: Presidio's analyzer over spaCy pipelines that are installed packages
(GiNZA's ``ja_ginza``, or spaCy's blank tokenizer) with the project's recognisers, and
its anonymizer replacing each entity by its typed placeholder; the glue that scrubs texts
in batches (the named-entity model only where its gate lets a text through) and reports a
text it cannot scrub, for the quarantine, instead of passing it through.

Nothing is downloaded: the engine is built from installed spaCy pipelines, never through
Presidio's ``NlpEngineProvider``, whose default would fetch ``en_core_web_lg``.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import spacy
from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig
from spacy.tokens import Doc

from so8t_kedro.records.pii.addresses import _AddressExtender
from so8t_kedro.records.pii.config import PiiConfig
from so8t_kedro.records.pii.fields import _FieldRecognizer
from so8t_kedro.records.pii.names import (
    _GivenNamePairRecognizer,
    _HonorificNameRecognizer,
    _KanaGivenNameRecognizer,
    _KanaGivenNames,
    _NerRecognizer,
    _PersonJoiner,
)
from so8t_kedro.records.pii.patterns import _ValidatedPatternRecognizer
from so8t_kedro.records.pii.public import (
    _Brands,
    _DocumentationValues,
    _PublicAddresses,
    _PublicFacts,
    _PublicPlaces,
)
from so8t_kedro.records.pii.text import _SudachiTokens
from so8t_kedro.records.text import detect_language

BLANK_MODEL = "blank"


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
            list[_ValidatedPatternRecognizer | _HonorificNameRecognizer | _GivenNamePairRecognizer
                 | _KanaGivenNameRecognizer | _FieldRecognizer],
        ] = {language: [] for language in languages}
        given_name_pairs = None
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
        # One lexicon of kana given names for the recogniser and the person joiner.
        kana_given_names = (_KanaGivenNames(config.kana_given_names)
                            if config.kana_given_names else None)
        for language in config.kana_given_names.languages if config.kana_given_names else ():
            if language in pipelines:
                kana_recognizer = _KanaGivenNameRecognizer(
                    config.kana_given_names, language, kana_given_names)
                registry.add_recognizer(kana_recognizer)
                self._pattern_recognizers[language].append(kana_recognizer)
        for language in config.fields.languages if config.fields else ():
            if language in pipelines:
                fields = _FieldRecognizer(config.fields, language)
                registry.add_recognizer(fields)
                self._pattern_recognizers[language].append(fields)
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
        self._public_addresses = _PublicAddresses(config.public_ip_addresses)
        self._documentation_values = _DocumentationValues(config.documentation_values)
        self._public_facts = _PublicFacts(config.public_facts)
        self._brands = _Brands(config.brands)
        self._public_places = _PublicPlaces(config.public_places) if config.public_places else None
        self._addresses = (_AddressExtender(config.address_parts)
                           if config.address_parts is not None else None)
        self._persons = _PersonJoiner(
            config.honorific_names, config.given_name_pairs,
            given_name_pairs.is_given_name_alone if given_name_pairs is not None else None,
            kana_given_names)

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
        found = {entity for r in self._pattern_recognizers[language] if r.may_match(text)
                 for entity in r.supported_entities}
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
            )
            # Placeholders and example values first: they make no context private.
            results = [r for r in results
                       if not self._documentation_values.is_documentation_value(text, r)]
            results = self._persons.join(text, results)
            if self._addresses is not None:
                results = self._addresses.extend(text, results)
            results = [r for r in results if not (
                r.entity_type == "IP_ADDRESS"
                and self._public_addresses.is_public_ip(text[r.start : r.end]))]
            if self._public_places is not None:
                public_places = {id(r) for r in self._public_places.public(text, language, results)}
                results = [r for r in results if id(r) not in public_places]
            brand_entities = self.config.brands.entities
            results = [r for r in results
                       if r.entity_type not in brand_entities or not self._brands.is_brand(text, r)]
            public = self.config.public_facts.entities
            kept = self._public_facts.public_persons(
                text, language, [r for r in results if r.entity_type in public],
                [r for r in results if r.entity_type not in public],
            )
            kept_ids = {id(person) for person in kept}
            results = [r for r in results if id(r) not in kept_ids]
            results += self._persons.around_private_persons(text, results)
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
        gate lets through. A text in Japanese script goes through the Japanese pipeline
        whatever its record's language says (an English request quoting
        'ジョンさん、田口さんも'): that pipeline runs every English recogniser as well, and
        the Japanese name readers besides."""
        results: list[ScrubResult | None] = [None] * len(texts)
        ner_rows: dict[str, list[tuple[int, list[str]]]] = {}
        ner_entities = set(self.config.ner.labels.values())
        for i, (text, language) in enumerate(zip(texts, languages, strict=True)):
            if language not in self.languages:
                results[i] = ScrubResult(None, error=f"no PII pipeline for language {language!r}")
                continue
            if "ja" in self.languages and detect_language(text) == "ja":
                language = "ja"
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

