"""The phrase bank's schema: the shipped bank is complete, and a broken one is refused with
the key that is wrong."""

from __future__ import annotations

import copy

import pytest

from so8t_kedro.labels import LABELS
from so8t_kedro.think import (
    LANGUAGES,
    THINK_PARTS,
    PhraseBank,
    PhraseBankError,
    compose_final,
    compose_thinking,
    resolve_domain,
)
from so8t_kedro.think.phrases import LABEL_FIELDS, TEMPLATE_PARTS
from tests.helpers.phrase_bank import PHRASE_BANK, PHRASE_BANK_DATA


def test_the_shipped_bank_covers_every_label_language_and_part():
    for label in LABELS:
        fallback = PHRASE_BANK.domains[PHRASE_BANK.fallback_domains[label]]
        assert fallback["label"] == label
        assert set(LABEL_FIELDS[label]) <= set(fallback)
        assert PHRASE_BANK.domains_of(label)
        for part in TEMPLATE_PARTS:
            for language in LANGUAGES:
                assert PHRASE_BANK.templates[part][label][language]
    assert TEMPLATE_PARTS == (*THINK_PARTS, "final")


def test_every_domain_renders_under_every_label_and_language():
    """Fields a domain lacks come from the label's fallback domain: no combination fails
    or leaves a slot unfilled."""
    for domain in PHRASE_BANK.domains:
        for label in LABELS:
            for language in LANGUAGES:
                text = "\n".join([
                    *compose_thinking(PHRASE_BANK, label, domain, "質問", language, "k").values(),
                    compose_final(PHRASE_BANK, label, domain, language, "k")])
                assert "{" not in text and "}" not in text, (domain, label, language)


def broken(path: tuple, value) -> dict:
    data = copy.deepcopy(PHRASE_BANK_DATA)
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


@pytest.mark.parametrize(("path", "value", "message"), [
    (("templates", "task", "DENY", "en"), ["Asks {quote} about {weather}"],
     r"templates\.task\.DENY\.en: unknown slots \['weather'\]"),
    (("templates", "final", "ALLOW", "fr"), ["Bonjour"],
     r"templates\.final\.ALLOW: needs exactly the languages \['ja', 'en'\]"),
    (("templates", "safety", "REFUSE"), KeyError,
     r"templates\.safety: needs exactly the labels"),
    (("domains", "cooking", "label"), "MAYBE", r"domains\.cooking\.label: must be one of"),
    (("domains", "cooking", "outline", "ja"), ["only one"],
     r"domains\.cooking\.outline\.ja: needs a list of 3 texts"),
    (("domains", "cooking", "colour"), {"ja": "赤", "en": "red"},
     r"domains\.cooking: unknown fields \['colour'\]"),
    (("fallback_domains", "DENY"), "cooking",
     r"fallback_domains\.DENY: 'cooking' must be a domain of label DENY"),
    (("urgent_final", "cooking"), {"ja": ["x"], "en": ["y"]},
     r"urgent_final\.cooking: must name an ESCALATION domain"),
    (("templates", "policy", "ALLOW", "ja"), ["{policy"], r"templates\.policy\.ALLOW\.ja:"),
    (("colour",), "red", r"needs exactly the keys"),
])
def test_a_broken_bank_names_the_key(path, value, message):
    with pytest.raises(PhraseBankError, match=rf"^bank\.yml: {message}"):
        PhraseBank.from_dict(broken(path, value), source="bank.yml")


def test_a_new_domain_is_an_edit_to_the_bank():
    data = broken(("domains", "gardening"), {
        "label": "ALLOW", "topic": {"ja": "園芸", "en": "gardening"},
        "concern": {"ja": "農薬の扱い", "en": "handling pesticides"},
        "keywords": ["園芸", "garden"]})
    bank = PhraseBank.from_dict(data)
    assert resolve_domain(bank, "unknown", "ALLOW", "garden tips please") == "gardening"
    assert "gardening" in compose_thinking(bank, "ALLOW", "gardening", "garden tips", "en",
                                           "k")["task"]
