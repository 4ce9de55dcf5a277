"""Rendering SFT samples from the phrase bank (``conf/base/think_phrase_bank.yml``).

Each record's thinking (task, safety, policy) and final reply are drawn from the bank's
phrasings for its label, its domain and its language, with an RNG keyed by the record id,
so the output is deterministic and independent of row order. The bank is data: the
thinking_sft pipeline loads it from the catalog and passes it in; :class:`PhraseBank`
checks its shape once, naming the key and the file of anything wrong.
"""

from __future__ import annotations

import hashlib
import random
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from so8t_kedro.labels import LABELS
from so8t_kedro.think.format import (
    DECISION_KEY,
    DEFAULT_FORMAT,
    DEFAULT_MAX_QUOTED_CHARS,
    END_TOKEN,
    LANGUAGES,
    THINK_PARTS,
    check_label,
    check_language,
    format_assistant,
    quote_request,
    render_prompt,
)

#: The slots a phrasing may use (see the bank's header).
SLOTS: frozenset[str] = frozenset(
    {"quote", "topic", "concern", "rule", "policy", "label", "expert", "alternative",
     "o1", "o2", "o3"})
#: Template groups: the three thinking parts, and the final reply.
TEMPLATE_PARTS: tuple[str, ...] = (*THINK_PARTS, "final")
#: Domain fields that depend on the label the domain is used under, and which labels' final
#: replies need them from the label's fallback domain.
LABEL_FIELDS: dict[str, tuple[str, ...]] = {
    "ALLOW": ("rule", "outline"),
    "ESCALATION": ("rule", "expert"),
    "DENY": ("rule", "alternative"),
    "REFUSE": ("rule", "alternative"),
}
_TEXT_FIELDS = ("topic", "concern", "rule", "expert", "alternative")
_OUTLINE_ITEMS = 3


class PhraseBankError(ValueError):
    """The phrase bank does not have the shape rendering needs."""


def _per_language(value: Any, where: str, *, lists: bool = False,
                  count: int | None = None) -> dict[str, Any]:
    """``{language: text}`` for every language, or with ``lists`` ``{language: [texts]}``
    (exactly ``count`` texts when given, else at least one)."""
    if not isinstance(value, Mapping) or set(value) != set(LANGUAGES):
        raise PhraseBankError(f"{where}: needs exactly the languages {list(LANGUAGES)}, "
                              f"got {sorted(value) if isinstance(value, Mapping) else value!r}")
    for language, text in value.items():
        texts = text if lists else [text]
        if lists and (not isinstance(text, list) or not text
                      or (count is not None and len(text) != count)):
            raise PhraseBankError(f"{where}.{language}: needs a list of "
                                  f"{count or 'at least 1'} texts, got {text!r}")
        if not all(isinstance(t, str) and t.strip() for t in texts):
            raise PhraseBankError(f"{where}.{language}: every text must be a non-empty string")
    return dict(value)


def _phrasings(value: Any, where: str) -> dict[str, list[str]]:
    """``{language: [phrasings]}``, each phrasing using only the known slots."""
    checked = _per_language(value, where, lists=True)
    for language, phrasings in checked.items():
        for text in phrasings:
            _check_slots(text, f"{where}.{language}")
    return checked


def _check_slots(text: str, where: str) -> None:
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as error:
        raise PhraseBankError(f"{where}: {error} in {text!r}") from None
    unknown = used - SLOTS
    if unknown:
        raise PhraseBankError(f"{where}: unknown slots {sorted(unknown)} in {text!r}; "
                              f"the slots are {sorted(SLOTS)}")


def _per_label(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or set(value) != set(LABELS):
        raise PhraseBankError(f"{where}: needs exactly the labels {list(LABELS)}, "
                              f"got {sorted(value) if isinstance(value, Mapping) else value!r}")
    return value


@dataclass(frozen=True)
class PhraseBank:
    """The validated phrase bank. Build it with :meth:`from_dict` or :func:`load_phrase_bank`."""

    domains: Mapping[str, Mapping[str, Any]]
    fallback_domains: Mapping[str, str]
    policy_names: Mapping[str, Mapping[str, str]]
    templates: Mapping[str, Mapping[str, Mapping[str, list[str]]]]
    urgent_final: Mapping[str, Mapping[str, list[str]]]

    @classmethod
    def from_dict(cls, data: Any, source: str = "the phrase bank") -> PhraseBank:
        """Check ``data`` (the YAML's content); errors name ``source`` and the key."""
        try:
            return cls._from_dict(data)
        except PhraseBankError as error:
            raise PhraseBankError(f"{source}: {error}") from None

    @classmethod
    def _from_dict(cls, data: Any) -> PhraseBank:
        keys = ("domains", "fallback_domains", "policy_names", "templates", "urgent_final")
        if not isinstance(data, Mapping) or set(data) != set(keys):
            got = sorted(data) if isinstance(data, Mapping) else type(data).__name__
            raise PhraseBankError(f"needs exactly the keys {list(keys)}, got {got}")

        domains = {}
        for name, entry in data["domains"].items():
            where = f"domains.{name}"
            if not isinstance(entry, Mapping) or entry.get("label") not in LABELS:
                raise PhraseBankError(f"{where}.label: must be one of {list(LABELS)}")
            unknown = set(entry) - {"label", "keywords", "outline", *_TEXT_FIELDS}
            if unknown:
                raise PhraseBankError(f"{where}: unknown fields {sorted(unknown)}")
            for required in ("topic", "concern"):
                if required not in entry:
                    raise PhraseBankError(f"{where}: missing {required}")
            checked = {"label": entry["label"]}
            for field in _TEXT_FIELDS:
                if field in entry:
                    checked[field] = _per_language(entry[field], f"{where}.{field}")
            if "outline" in entry:
                checked["outline"] = _per_language(entry["outline"], f"{where}.outline",
                                                   lists=True, count=_OUTLINE_ITEMS)
            keywords = entry.get("keywords", [])
            if not isinstance(keywords, list) or not all(isinstance(k, str) and k
                                                         for k in keywords):
                raise PhraseBankError(f"{where}.keywords: must be a list of words")
            checked["keywords"] = list(keywords)
            domains[name] = checked

        fallback_domains = dict(_per_label(data["fallback_domains"], "fallback_domains"))
        for label, name in fallback_domains.items():
            where = f"fallback_domains.{label}"
            if domains.get(name, {}).get("label") != label:
                raise PhraseBankError(f"{where}: {name!r} must be a domain of label {label}")
            missing = [f for f in LABEL_FIELDS[label] if f not in domains[name]]
            if missing:
                raise PhraseBankError(f"domains.{name}: a fallback domain needs {missing}")

        policy_names = {label: _per_language(names, f"policy_names.{label}")
                        for label, names in _per_label(data["policy_names"],
                                                       "policy_names").items()}

        templates_in = data["templates"]
        if not isinstance(templates_in, Mapping) or set(templates_in) != set(TEMPLATE_PARTS):
            raise PhraseBankError(f"templates: needs exactly the parts {list(TEMPLATE_PARTS)}")
        templates = {}
        for part in TEMPLATE_PARTS:
            templates[part] = {}
            for label, texts in _per_label(templates_in[part], f"templates.{part}").items():
                templates[part][label] = _phrasings(texts, f"templates.{part}.{label}")

        urgent_final = {}
        for name, texts in data["urgent_final"].items():
            where = f"urgent_final.{name}"
            if domains.get(name, {}).get("label") != "ESCALATION":
                raise PhraseBankError(f"{where}: must name an ESCALATION domain")
            urgent_final[name] = _phrasings(texts, where)

        return cls(domains, fallback_domains, policy_names, templates, urgent_final)

    def domains_of(self, label: str) -> tuple[str, ...]:
        """The label's domains (fallback included), in the bank's order."""
        return tuple(name for name, entry in self.domains.items() if entry["label"] == label)


def load_phrase_bank(path: str | Path) -> PhraseBank:
    """Read and check a phrase bank YAML file."""
    with open(path, encoding="utf-8") as handle:
        return PhraseBank.from_dict(yaml.safe_load(handle), source=str(path))


def _rng(rng_key: object, part: str) -> random.Random:
    """An RNG seeded from (record key, part): deterministic and independent of row order."""
    digest = hashlib.sha256(f"{rng_key}|{part}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def resolve_domain(bank: PhraseBank, domain: object, label: str, user_text: str = "") -> str:
    """The domain the phrasing is drawn from.

    A known domain is kept. ``"unknown"`` (external data), an empty value or a word outside
    the vocabulary is inferred from keywords among the label's domains; with no keyword hit
    it falls back to the label's generic domain (``fallback_domains``).
    """
    check_label(label)
    if isinstance(domain, str) and domain in bank.domains:
        return domain
    lowered = (user_text or "").lower()
    scores = [(sum(lowered.count(k.lower()) for k in bank.domains[name]["keywords"]), name)
              for name in bank.domains_of(label)]
    best = max((score for score, _ in scores), default=0)
    if best > 0:
        return next(name for score, name in scores if score == best)
    return bank.fallback_domains[label]


def _domain_field(bank: PhraseBank, domain: str, label: str, name: str, language: str):
    """A domain's text for ``name``; label-specific fields come from the label's fallback
    domain when the domain belongs to another label (e.g. an ALLOW record tagged medical)."""
    entry = bank.domains[domain]
    label_specific = name in ("rule", "outline", "expert", "alternative")
    if name in entry and not (label_specific and entry["label"] != label):
        return entry[name][language]
    fallback = bank.domains[bank.fallback_domains[label]]
    if name in fallback:
        return fallback[name][language]
    # Fields a label's templates never use (e.g. ``outline`` for DENY): any generic value.
    for generic in bank.fallback_domains.values():
        if name in bank.domains[generic]:
            return bank.domains[generic][name][language]
    raise KeyError(name)


def _slots(bank: PhraseBank, label: str, domain: str, language: str, user_text: str,
           max_quoted_chars: int) -> dict[str, str]:
    outline = _domain_field(bank, domain, label, "outline", language)
    return {
        "quote": quote_request(user_text, max_quoted_chars),
        **{name: _domain_field(bank, domain, label, name, language) for name in _TEXT_FIELDS},
        "policy": bank.policy_names[label][language],
        "label": label,
        "o1": outline[0],
        "o2": outline[1],
        "o3": outline[2],
    }


def domain_phrases(bank: PhraseBank, domain: str, label: str, language: str,
                   user_text: str = "") -> dict[str, str]:
    """The domain- and label-specific phrases a record's thinking and final draw from:
    ``topic``, ``concern``, ``rule``, ``expert``, ``alternative``, ``policy``, ``label`` and
    the ALLOW outline ``o1``..``o3`` (``domain`` is resolved first)."""
    check_label(label)
    check_language(language)
    domain = resolve_domain(bank, domain, label, user_text)
    slots = _slots(bank, label, domain, language, user_text, DEFAULT_MAX_QUOTED_CHARS)
    del slots["quote"]
    return slots


def compose_thinking(bank: PhraseBank, label: str, domain: str, user_text: str,
                     language: str, rng_key: object, *,
                     max_quoted_chars: int = DEFAULT_MAX_QUOTED_CHARS) -> dict[str, str]:
    """The three thinking parts ``{"task", "safety", "policy"}`` for one record.

    Conditioned on the label and the (resolved) domain, in the request's language; each
    part's phrasing is drawn with an RNG keyed by ``rng_key`` and the part's name.
    """
    check_label(label)
    check_language(language)
    domain = resolve_domain(bank, domain, label, user_text)
    slots = _slots(bank, label, domain, language, user_text, max_quoted_chars)
    return {
        part: _rng(rng_key, part).choice(bank.templates[part][label][language]).format(**slots)
        for part in THINK_PARTS
    }


def compose_final(bank: PhraseBank, label: str, domain: str, language: str,
                  rng_key: object, user_text: str = "") -> str:
    """The final part: the decision line ``判定: <LABEL>``, then a short reply fitting the
    label (ALLOW an answer outline, ESCALATION a referral, DENY a policy denial, REFUSE a
    refusal) in the request's language. ``user_text`` only serves domain inference."""
    check_label(label)
    check_language(language)
    domain = resolve_domain(bank, domain, label, user_text)
    slots = _slots(bank, label, domain, language, user_text, DEFAULT_MAX_QUOTED_CHARS)
    phrasings = bank.templates["final"][label][language]
    if label == "ESCALATION" and domain in bank.urgent_final:
        phrasings = bank.urgent_final[domain][language]
    reply = _rng(rng_key, "final").choice(phrasings).format(**slots)
    return f"{DECISION_KEY}: {label}\n{reply}"


def render_completion(bank: PhraseBank, label: str, domain: str, user_text: str,
                      language: str, fmt: str = DEFAULT_FORMAT, rng_key: object = "", *,
                      max_quoted_chars: int = DEFAULT_MAX_QUOTED_CHARS) -> str:
    """The assistant's reply for one record, followed by ``<|end|>``."""
    thinking = compose_thinking(bank, label, domain, user_text, language, rng_key,
                                max_quoted_chars=max_quoted_chars)
    final = compose_final(bank, label, domain, language, rng_key, user_text)
    return format_assistant(thinking, final, fmt, language) + END_TOKEN


def render_sample(bank: PhraseBank, label: str, domain: str, user_text: str, language: str,
                  fmt: str = DEFAULT_FORMAT, rng_key: object = "", *,
                  max_quoted_chars: int = DEFAULT_MAX_QUOTED_CHARS) -> dict[str, str]:
    """``{"prompt", "completion", "text"}`` with ``text == prompt + completion``."""
    prompt = render_prompt(user_text, language)
    completion = render_completion(bank, label, domain, user_text, language, fmt, rng_key,
                                   max_quoted_chars=max_quoted_chars)
    return {"prompt": prompt, "completion": completion, "text": prompt + completion}
