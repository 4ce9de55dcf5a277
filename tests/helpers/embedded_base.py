"""The embedded base's parameters as conf/base holds them (``embedded_params``), the corpus
the tests of ``so8t_kedro.models`` build it from, and the texts that probe its tokenizer."""

from __future__ import annotations

import json

from so8t_kedro import think as tf
from tests.helpers.phrase_bank import PHRASE_BANK
from tests.helpers.project import SEED_DATA, base_parameters

JA_REQUEST = "日本で一番高い山と、二番目に高い山を教えてください。"
EN_REQUEST = "How do I make a simple tomato pasta sauce for two people?"
# Characters absent from the corpus: must come back through byte fallback, never <unk>.
UNSEEN = "絵文字 😀🦜 と珍しい漢字 龘齉 ✓ — naïve café ﷺ"


def embedded_params(**overrides) -> dict:
    """conf/base's ``base_model.embedded`` less ``pretrain`` (what the training node passes
    to ``embedded_base_model``), ``placeholder_tokens`` resolved as a run resolves
    ``${pii.placeholders}``, with ``overrides`` over it (``pretrain=...`` adds one back, for
    ``build_embedded_base_model``). A fresh copy each call."""
    params = base_parameters("base_model")["embedded"]
    del params["pretrain"]
    return {**params, **overrides}


def seed_corpus() -> list[str]:
    """The seed requests, then a /think sample of every fifth one."""
    rows = [json.loads(line) for line in SEED_DATA.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    texts = [row["text"] for row in rows]
    samples = [
        tf.render_sample(PHRASE_BANK, row["label"], row.get("domain"), row["text"], row["language"],
                         rng_key=row["id"])["text"]
        for row in rows[::5]
    ]
    return texts + samples


def token_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=True)["input_ids"]
