"""Near-duplicate keys and groups (so8t_kedro.records.near_duplicates)."""

from __future__ import annotations

import itertools
import random
import string

import pytest
from datasketch import MinHash

from so8t_kedro.records.near_duplicates import (
    char_ngrams,
    dedup_key,
    gram_ids,
    minhashes,
    near_duplicate_groups,
)


def jaccard(a: set[str], b: set[str]) -> float:
    """The definition the groups are checked against: |a ∩ b| / |a ∪ b|."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


SETTINGS = {
    "ngram": 3, "threshold": 0.6, "num_perm": 128, "seed": 1, "max_indexed_per_group": 50
}


def test_dedup_key_ignores_case_width_space_and_punctuation():
    assert dedup_key("ＨＯＷ　ＤＯ Ｉ　ＢＡＫＥ　ＢＲＥＡＤ？") == "howdoibakebread"
    assert dedup_key("爆弾の作り方を、教えて！") == "爆弾の作り方を教えて"
    base = dedup_key("hello world")
    assert base == "helloworld"
    for variant in [
        "Hello, World!",
        "  HELLO   world.",
        "ＨＥＬＬＯ　ＷＯＲＬＤ！",
        "hello-world?",
        "«hello» world",
    ]:
        assert dedup_key(variant) == base, variant
    assert dedup_key("こんにちは。") == dedup_key("こんにちは") == dedup_key("「こんにちは」")
    assert dedup_key("hello word") != base
    assert dedup_key("ALLOW 1") != dedup_key("ALLOW 2")


def test_char_ngrams():
    assert char_ngrams("Ab-cd", 3) == {"abc", "bcd"}
    assert char_ngrams("ab", 3) == {"ab"}  # shorter than n: the key itself
    assert char_ngrams("!?", 3) == set()
    a, b = char_ngrams("abcde", 3), char_ngrams("abcdf", 3)  # {abc,bcd,cde} vs {abc,bcd,cdf}
    assert jaccard(a, b) == pytest.approx(2 / 4)


def test_minhashes_are_datasketchs_own():
    """Hashing each distinct n-gram once gives the MinHash of the n-grams' bytes."""
    grams = [char_ngrams(t, 3) for t in ("爆弾の作り方を教えて", "How do I bake bread?", "!!")]
    ids, vocabulary = gram_ids(grams)
    assert ids[0] and [vocabulary[k] for k in ids[0]] == list(grams[0])
    for text_grams, fast in zip(grams, minhashes(ids, vocabulary, num_perm=64, seed=7), strict=True):
        reference = MinHash(num_perm=64, seed=7)
        reference.update_batch([g.encode("utf-8") for g in text_grams])
        assert (fast.hashvalues == reference.hashvalues).all()


# Variants that must join their original's group (Jaccard of trigrams >= 0.6) ...
PLANTED = [
    ("How do I bake sourdough bread at home?", "How do I bake sourdugh bread at home"),  # typo
    ("How do I bake sourdough bread at home?", "How do I bake sourdough bread at home, please?"),
    ("爆弾の作り方を教えて", "爆弾の作り方を教えてください"),  # politeness
    ("東京で美味しいラーメン屋を教えてください。", "東京で美味しいラーメン屋を教えて"),
]
# ... and contrast twins that must not (below 0.6).
APART = [
    ("How do I make a bomb?", "How do I make a cake?"),
    ("How do I kill a Python process?", "How do I kill a person?"),
    ("覚醒剤の作り方を教えて", "爆弾の作り方を教えて"),
]


@pytest.mark.parametrize(("original", "variant"), PLANTED)
def test_planted_variants_are_grouped(original, variant):
    assert jaccard(char_ngrams(original, 3), char_ngrams(variant, 3)) >= SETTINGS["threshold"]
    assert near_duplicate_groups([original, "unrelated text here", variant], **SETTINGS) == [0, 1, 0]


@pytest.mark.parametrize(("a", "b"), APART)
def test_contrast_twins_stay_apart(a, b):
    assert near_duplicate_groups([a, b], **SETTINGS) == [0, 1]


def _random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(string.ascii_lowercase + " ", k=40)) for _ in range(n)]


def test_groups_match_exhaustive_pairwise_jaccard():
    """LSH finds every pair the O(n²) exact check finds, on texts with planted variants."""
    rng = random.Random(3)
    texts = _random_texts(300, seed=2)
    for k in range(0, 300, 10):  # a one- or two-letter edit of every tenth text
        chars = list(texts[k])
        for _ in range(rng.choice((1, 2))):
            chars[rng.randrange(len(chars))] = rng.choice(string.ascii_lowercase)
        texts.append("".join(chars))
    groups = near_duplicate_groups(texts, **SETTINGS)
    grams = [char_ngrams(t, 3) for t in texts]
    pairs = [
        (i, j)
        for i, j in itertools.combinations(range(len(texts)), 2)
        if jaccard(grams[i], grams[j]) >= SETTINGS["threshold"]
    ]
    assert len(pairs) == 30  # exactly the planted ones: random texts share little
    assert all(groups[i] == groups[j] for i, j in pairs)
    assert len(set(groups)) == len(texts) - 30
    assert all(g <= i for i, g in enumerate(groups))  # the id is the group's first text


def test_a_text_matching_two_groups_merges_them():
    a = "the quick brown fox jumps over the lazy dog lorem ipsum"
    b = "lorem ipsum pack my box with five dozen liquor jugs now"
    bridge = a + b.removeprefix("lorem ipsum")
    grams = [char_ngrams(t, 3) for t in (a, b, bridge)]
    # bridge is 0.55 / 0.57 similar to a / b, a and b only 0.12 to each other
    assert 0.5 < jaccard(grams[0], grams[2]) < 0.6 and 0.5 < jaccard(grams[1], grams[2]) < 0.6
    assert near_duplicate_groups([a, b, bridge], **SETTINGS) == [0, 1, 2]
    assert near_duplicate_groups([a, b, bridge], **{**SETTINGS, "threshold": 0.5}) == [0, 0, 0]


def test_chains_hold_until_a_group_reaches_its_index_cap():
    a = "please find me a good ramen shop near tokyo station"
    b = a.replace("good", "nice")  # one word off a
    c = b.replace("ramen", "sushi")  # one word off b, two off a
    grams = [char_ngrams(t, 3) for t in (a, b, c)]
    assert jaccard(grams[0], grams[1]) >= 0.6 and jaccard(grams[1], grams[2]) >= 0.6
    assert jaccard(grams[0], grams[2]) < 0.6
    assert near_duplicate_groups([a, b, c], **SETTINGS) == [0, 0, 0]
    # With one indexed text per group only a is searchable: c, far from a, starts a group.
    assert near_duplicate_groups([a, b, c], **{**SETTINGS, "max_indexed_per_group": 1}) == [
        0,
        0,
        2,
    ]


def test_a_template_repeated_many_times_is_one_group():
    texts = [f"order number {n} for the ramen shop near tokyo station" for n in range(2000)]
    assert set(near_duplicate_groups(texts, **SETTINGS)) == {0}


def test_deterministic_for_a_seed():
    texts = _random_texts(50, seed=5) + [t[:-1] + "x" for t in _random_texts(50, seed=5)]
    first = near_duplicate_groups(texts, **SETTINGS)
    assert first == near_duplicate_groups(list(texts), **SETTINGS)
    assert first[50:] == list(range(50))


def test_empty_input_and_empty_keys():
    assert near_duplicate_groups([], **SETTINGS) == []
    assert near_duplicate_groups(["!!", "??"], **SETTINGS) == [0, 1]  # nothing to compare


def test_threshold_must_be_a_similarity():
    with pytest.raises(ValueError, match="threshold"):
        near_duplicate_groups(["a"], **{**SETTINGS, "threshold": 0.0})
