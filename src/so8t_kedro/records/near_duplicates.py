"""Exact-duplicate keys and near-duplicate groups of request texts.

Two texts are *near duplicates* when the Jaccard similarity of their character n-gram
sets (n-grams of :func:`dedup_key`, so case, width, whitespace and punctuation do not
count) is at least a threshold: the same request with a typo, a politeness change or a
different ending. Candidates come from datasketch's MinHash LSH, which finds similar
pairs without comparing all n²/2 of them (100k records are 5·10⁹ pairs, too many for
hand-written pairwise code) and picks its bands from the threshold; a candidate whose
MinHash estimate comes near the threshold is then checked with the exact Jaccard
similarity, so every pair that is grouped meets the threshold exactly.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence

import numpy as np
from datasketch import MinHash, MinHashLSH

# LSH misses a pair with a probability that grows as its similarity nears the threshold,
# and each false candidate costs a check. Misses are weighted 9:1 (datasketch picks its
# bands and rows by minimising the weighted sum of both error integrals): for threshold
# 0.6 and 128 permutations, 25 bands of 5 rows; a pair is a candidate with probability
# 1 - (1 - J⁵)²⁵: 0.87 at J = 0.6, 0.95 at 0.65, 0.99 at 0.7, 0.9999 at 0.8 (a typo).
# 31 bands of 4 rows (weights 1:49, 0.987 at 0.6) make four times the false candidates
# (0.22 vs 0.06 at J = 0.3, two requests sharing a template).
_LSH_WEIGHTS = (0.1, 0.9)
# A candidate is checked exactly only if its MinHash estimate is within this margin of
# the threshold: the estimate's standard error is sqrt(J(1-J)/num_perm) <= 0.044 for 128
# permutations, so 0.15 is 3.4 standard errors (a miss about 1 in 3,000 at the threshold).
_ESTIMATE_MARGIN = 0.15


@functools.cache
def _punct_space_table() -> dict[int, None]:
    """``str.translate`` table deleting Unicode punctuation (P*) and whitespace (planes 0-1)."""
    return {
        cp: None
        for cp in range(0x20000)
        if chr(cp).isspace() or unicodedata.category(chr(cp))[0] in "PZ"
    }


def dedup_key(text: str) -> str:
    """Deduplication key: NFKC + casefold, with whitespace and punctuation removed."""
    return unicodedata.normalize("NFKC", text).casefold().translate(_punct_space_table())


def char_ngrams(text: str, n: int) -> set[str]:
    """The character n-grams of ``dedup_key(text)`` (the whole key if it is shorter)."""
    key = dedup_key(text)
    if len(key) <= n:
        return {key} if key else set()
    return {key[i : i + n] for i in range(len(key) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    """|a ∩ b| / |a ∪ b| (0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def near_duplicate_groups(
    texts: Sequence[str],
    *,
    ngram: int,
    threshold: float,
    num_perm: int,
    seed: int,
    max_indexed_per_group: int,
) -> list[int]:
    """The group of every text: the index of the group's first text (input order).

    Groups are the connected components of "n-gram Jaccard similarity >= threshold":
    a text joins the group of every earlier indexed text it is that similar to, and
    groups it links merge. Every text is indexed until its group holds
    ``max_indexed_per_group`` indexed texts; later members are still grouped by their
    similarity to those, but are not indexed themselves. That bounds the cost of a
    template repeated thousands of times (each new copy would otherwise be checked
    against every earlier one); a chain A~B~C can then only break inside a group
    already that large.

    Deterministic for a given ``seed`` (the MinHash permutations).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    grams = [char_ngrams(text, ngram) for text in texts]
    hashes = MinHash.bulk(
        [[g.encode("utf-8") for g in s] for s in grams], num_perm=num_perm, seed=seed
    )
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=_LSH_WEIGHTS)
    parent = list(range(len(texts)))  # union-find; a root is its group's first text
    indexed = [0] * len(texts)  # indexed texts per root

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    signatures = np.stack([m.hashvalues for m in hashes]) if hashes else None
    for i, (text_grams, minhash) in enumerate(zip(grams, hashes, strict=True)):
        if not text_grams:
            continue
        candidates = np.fromiter(lsh.query(minhash), dtype=np.int64)
        if candidates.size:
            estimates = (signatures[candidates] == signatures[i]).mean(axis=1)
            candidates = candidates[estimates >= threshold - _ESTIMATE_MARGIN]
        for j in candidates.tolist():
            a, b = root(i), root(j)
            if a != b and jaccard(text_grams, grams[j]) >= threshold:
                first, other = min(a, b), max(a, b)
                parent[other] = first
                indexed[first] += indexed[other]
        group = root(i)
        if indexed[group] < max_indexed_per_group:
            lsh.insert(i, minhash, check_duplication=False)
            indexed[group] += 1
    return [root(i) for i in range(len(texts))]
