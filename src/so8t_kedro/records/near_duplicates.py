"""Exact-duplicate keys and near-duplicate groups of request texts.

Two texts are *near duplicates* when the Jaccard similarity of their character n-gram
sets (n-grams of :func:`dedup_key`, so case, width, whitespace and punctuation do not
count) is at least a threshold: the same request with a typo, a politeness change or a
different ending. Candidates come from MinHash LSH (datasketch's MinHash and its choice
of bands for the threshold; the band keys computed for all texts at once), which finds
similar pairs without comparing all n²/2 of them (100k records are 5·10⁹ pairs); every
candidate is then checked with the exact Jaccard similarity (all of a text's candidates
at once, in numpy), so every pair that is grouped meets the threshold exactly.
"""

from __future__ import annotations

import functools
import itertools
import unicodedata
from collections.abc import Sequence

import numpy as np
from datasketch import MinHash, MinHashLSH
from datasketch.hashfunc import sha1_hash32

# LSH misses a pair with a probability that grows as its similarity nears the threshold,
# and each false candidate costs a check. Misses are weighted 9:1 (datasketch picks the
# bands and rows by minimising the weighted sum of both error integrals): for threshold
# 0.6 and 128 permutations, 25 bands of 5 rows; a pair is a candidate with probability
# 1 - (1 - J⁵)²⁵: 0.87 at J = 0.6, 0.95 at 0.65, 0.99 at 0.7, 0.9999 at 0.8 (a typo).
# 31 bands of 4 rows (weights 1:49, 0.987 at 0.6) make four times the false candidates
# (0.22 vs 0.06 at J = 0.3, two requests sharing a template); so do 64 permutations
# (16 x 4: 0.12 at 0.3, measured 9 % slower on 100k synthetic requests). Every candidate
# is checked exactly: cheaper than a MinHash estimate first (its ~60 n-gram ids against
# 128 hash values), and no pair is lost to the estimate's error.
_LSH_WEIGHTS = (0.1, 0.9)
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


def gram_ids(grams: Sequence[set[str]]) -> tuple[list[list[int]], list[str]]:
    """Each distinct n-gram's id (order of first appearance), per text, and the n-grams."""
    vocabulary: dict[str, int] = {}
    ids = [[vocabulary.setdefault(g, len(vocabulary)) for g in s] for s in grams]
    return ids, list(vocabulary)


def minhashes(
    ids: Sequence[Sequence[int]], vocabulary: Sequence[str], *, num_perm: int, seed: int
) -> list[MinHash]:
    """datasketch's MinHash of each text's n-grams (given as ids into ``vocabulary``):
    the same hash function and permutations as ``MinHash.update_batch`` on the n-grams'
    UTF-8 bytes, but each distinct n-gram is hashed once (a table look-up per
    occurrence instead of a SHA-1) and the permutations are drawn once, not per text."""
    gram_hashes = [sha1_hash32(g.encode("utf-8")) for g in vocabulary]
    template = MinHash(num_perm=num_perm, seed=seed)
    return MinHash.bulk(
        ids,
        num_perm=num_perm,
        seed=seed,
        hashfunc=gram_hashes.__getitem__,
        permutations=template.permutations,
        scheme=template.scheme,
    )


def lsh_band_keys(signatures: np.ndarray | None, *, threshold: float, num_perm: int) -> np.ndarray:
    """Per text, one key per LSH band: two texts share a key exactly when their MinHash
    values agree on all the rows of that band. The bands and rows are datasketch's
    choice for the threshold (``MinHashLSH``'s own optimiser); the keys are computed for
    all texts at once, where ``MinHashLSH.insert`` / ``query`` hash every band of every
    text in Python (~0.4 ms a text, 40 % of the grouping's time on 100k requests)."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=_LSH_WEIGHTS)
    if signatures is None:
        return np.zeros((0, lsh.b), dtype=np.int64)
    keys = np.empty((len(signatures), lsh.b), dtype=np.int64)
    for band, (start, end) in enumerate(lsh.hashranges):
        _, inverse = np.unique(signatures[:, start:end], axis=0, return_inverse=True)
        keys[:, band] = inverse.ravel() * lsh.b + band  # distinct across bands
    return keys


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
    ids, vocabulary = gram_ids(grams)
    hashes = minhashes(ids, vocabulary, num_perm=num_perm, seed=seed)
    signatures = np.stack([m.hashvalues for m in hashes]) if hashes else None
    band_keys = lsh_band_keys(signatures, threshold=threshold, num_perm=num_perm)
    members: dict[int, list[int]] = {}  # band key -> indexed texts
    # All texts' n-gram ids end to end (text i's at offsets[i]:offsets[i + 1]) and a
    # mask over the vocabulary: the exact intersections of a text with all its
    # candidates are a few array operations, not a set intersection per pair
    # (int32 ids: half the memory traffic of the gathers, which are the cost).
    sizes = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(offsets[-1]))
    in_text = np.zeros(len(vocabulary), dtype=bool)
    parent = list(range(len(texts)))  # union-find; a root is its group's first text
    indexed = [0] * len(texts)  # indexed texts per root

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(texts)):
        if not sizes[i]:
            continue
        keys = band_keys[i].tolist()
        found = [members[k] for k in keys if k in members]
        candidates = np.unique(np.fromiter(itertools.chain.from_iterable(found), dtype=np.int64))
        if candidates.size:
            own = flat[offsets[i] : offsets[i + 1]]
            lengths = sizes[candidates]
            ends = np.cumsum(lengths)
            positions = np.arange(ends[-1]) + np.repeat(offsets[candidates] - ends + lengths, lengths)
            in_text[own] = True
            shared = np.add.reduceat(in_text[flat[positions]], ends - lengths)
            in_text[own] = False
            similar = shared / (lengths + sizes[i] - shared) >= threshold
            for j in candidates[similar].tolist():
                a, b = root(i), root(j)
                if a != b:
                    first, other = min(a, b), max(a, b)
                    parent[other] = first
                    indexed[first] += indexed[other]
        group = root(i)
        if indexed[group] < max_indexed_per_group:
            for k in keys:
                members.setdefault(k, []).append(i)
            indexed[group] += 1
    return [root(i) for i in range(len(texts))]
