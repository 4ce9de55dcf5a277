"""Does a learned classifier over the rules' own lexicons and the words around a name find
the private persons the rules miss on unseen sets, without breaking look-alikes?

The spaCy NER of ``ner_cross_validation.py`` learned from scratch and knew no names; this
probe gives a linear model the knowledge the rules have (given-name lists, the public
figure gazetteer, the brands, Sudachi's 人名 tags, GiNZA's entity labels) as features beside
the context (the words or characters before and after, whether the text is a factual
question, whether it holds other personal data), so that it can learn which cues matter
instead of our regexes naming them one by one.

Candidates: runs of capitalised or all-capital Latin words (every text); in Japanese texts
GiNZA's entities, runs of Sudachi proper nouns, and katakana runs. A candidate is labelled
a person when it overlaps a labelled ``PERSON``; the classifier (scikit-learn's
``LogisticRegression`` over ``DictVectorizer`` features, seeded) marks a candidate a
person above a probability threshold, and its spans are added to the rules' (the union),
as a recogniser would be.

    OMP_NUM_THREADS=1 nice -n 19 python notebooks/pii_probes/person_span_classifier.py

Development split only, as ``ner_cross_validation.py`` (whose helpers it uses: the same
4 groups of whole sets, the same cached rules results, the same scoring): (1)
leave-groups-out cross-validation, (2) chronological: trained on the sets written before
the first blind one (0-15), scored on the blind sets in development (16 on). The rules were
tuned on every development set measured before the last round (on the scored ones too), so
their own figures are optimistic there; what the probe measures is what the classifier adds
to them and what that costs.
"""

from __future__ import annotations

import argparse
import sys
import unicodedata
from pathlib import Path

import regex

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ner_cross_validation import (
    Result,
    add,
    by_set,
    groups_of,
    masked,
    rules_results,
    set_number,
    table,
    union,
)
from pii import case_set, evaluate, load_cases

SEED = 0
THRESHOLDS = (0.5, 0.7, 0.9)
_NAME_WORD = r"(?:\p{Lu}[\p{Ll}\p{M}'’]+(?:-\p{Lu}?\p{Ll}+)?|\p{Lu}{2,})"
LATIN_RUN = regex.compile(
    rf"(?<![\p{{L}}\p{{M}}]){_NAME_WORD}(?:\s(?:\p{{Lu}}\.|{_NAME_WORD}))*(?![\p{{L}}\p{{M}}])")
KATAKANA_RUN = regex.compile(r"[\p{Katakana}ー]{2,}")
LATIN_WORD = regex.compile(r"[\p{L}\p{M}'’-]+|\d+|[^\s\p{L}\p{M}\d]")
SENTENCE_START = regex.compile(r"(?:^|[.!?。!?\n:]\s*|[\"“‘'(「]\s*)$")
QUESTION_END = regex.compile(r"(?:[??]|か|の|っけ|ですか)\s*$")
WH_WORD = regex.compile(r"^(?i:who|what|when|where|why|how|which|did|was|were|is)\b")
OTHER_PII = regex.compile(r"\d{4}|@|〒|https?://")


def folded(name: str) -> str:
    return regex.sub(r"[\s・=＝·.\-‐]", "", unicodedata.normalize("NFKC", name)).casefold()


class Lexicons:
    """What the rules know, read from the project's parameters and packages."""

    def __init__(self, params: dict):
        from so8t_kedro.records.pii.names import _read_package_names

        pairs = params["given_name_pairs"]
        package = pairs["package_names"]
        regional = {name for lists in (pairs["regional_names"], pairs["more_regional_names"])
                    for names in lists.values() for name in names}
        self.given = (set(pairs["names"]) | regional | set(_read_package_names(
            package["package"], package["file"], int(package["min_frequency"])))) - set(
            pairs["not_names"])
        allow = params["public_facts"]["allow_list"]
        self.public = {folded(n) for names in (allow.values() if isinstance(allow, dict)
                                               else [allow]) for n in names}
        self.brands = {folded(b) for b in _flatten(params.get("brands", []))}


def _flatten(value) -> list[str]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _flatten(v)]
    if isinstance(value, list):
        return [x for v in value for x in _flatten(v)]
    return [str(value)]


def script_of(text: str) -> str:
    kinds = set()
    for ch in text:
        if regex.match(r"\p{Han}", ch):
            kinds.add("kanji")
        elif regex.match(r"\p{Katakana}", ch):
            kinds.add("katakana")
        elif regex.match(r"\p{Hiragana}", ch):
            kinds.add("hiragana")
        elif regex.match(r"\p{Latin}", ch):
            kinds.add("latin")
    return "+".join(sorted(kinds)) or "other"


def candidates(text: str, doc) -> list[tuple[int, int, str]]:
    """(start, end, source) of each span that might be a person."""
    found = {(m.start(), m.end()): "latin" for m in LATIN_RUN.finditer(text)}
    if doc is not None:
        for ent in doc.ents:
            found.setdefault((ent.start_char, ent.end_char), "ginza_ent")
        run = None
        for token in doc:
            if "固有名詞" in token.tag_:
                run = (run[0], token.idx + len(token)) if run else (token.idx, token.idx + len(token))
            else:
                if run:
                    found.setdefault(run, "proper_noun_run")
                run = None
        if run:
            found.setdefault(run, "proper_noun_run")
        for m in KATAKANA_RUN.finditer(text):
            found.setdefault((m.start(), m.end()), "katakana")
    return [(s, e, src) for (s, e), src in sorted(found.items())]


def features(case: dict, doc, start: int, end: int, source: str, lex: Lexicons,
             vectors: bool = False) -> dict:
    text = case["text"]
    span = text[start:end]
    words = span.split()
    f = {f"source={source}": 1, f"script={script_of(span)}": 1,
         f"chars={min(len(span), 10)}": 1, f"words={min(len(words), 4)}": 1,
         f"lang={case['language']}": 1, f"span={span.casefold()}": 1}
    if span.isupper():
        f["all_caps"] = 1
    if SENTENCE_START.search(text[:start]):
        f["sentence_start"] = 1
    if words and words[0].strip(".,") in lex.given:
        f["first_word_given_name"] = 1
    if words and words[-1].strip(".,") in lex.given:
        f["last_word_given_name"] = 1
    if folded(span) in lex.public:
        f["public_figure"] = 1
    if any(folded(w) in lex.public for w in words):
        f["word_of_public_figure"] = 1
    if folded(span) in lex.brands:
        f["brand"] = 1
    if QUESTION_END.search(text):
        f["question"] = 1
    if WH_WORD.search(text):
        f["wh_question"] = 1
    if OTHER_PII.search(text[:start] + " " + text[end:]):
        f["other_personal_data"] = 1
    before = LATIN_WORD.findall(text[:start])[-2:]
    after = LATIN_WORD.findall(text[end:])[:2]
    for i, w in enumerate(reversed(before)):
        f[f"before{i + 1}={w.casefold()}"] = 1
    for i, w in enumerate(after):
        f[f"after{i + 1}={w.casefold()}"] = 1
    f[f"char_before={text[start - 1:start]}"] = 1
    f[f"chars_before={text[max(0, start - 2):start]}"] = 1
    f[f"char_after={text[end:end + 1]}"] = 1
    f[f"chars_after={text[end:end + 2]}"] = 1
    if doc is not None:
        for token in doc:
            if token.idx < end and start < token.idx + len(token):
                f[f"tag={token.tag_}"] = 1
        for ent in doc.ents:
            if ent.start_char < end and start < ent.end_char:
                f[f"ent={ent.label_}"] = 1
        inside = [t.vector for t in doc if vectors and t.idx < end
                  and start < t.idx + len(t) and t.has_vector]
        if inside:
            mean = sum(inside) / len(inside)
            mean = mean / (float((mean ** 2).sum()) ** 0.5 + 1e-9)
            f.update({f"vector{i}": float(x) for i, x in enumerate(mean)})
    return f


def rows_of(cases: list[dict], docs: dict, lex: Lexicons, vectors: bool):
    """(case index, start, end, features, is a person) of every candidate."""
    rows = []
    for i, case in enumerate(cases):
        doc = docs.get(case["id"])
        persons = [(e["start"], e["end"]) for e in case["entities"] if e["type"] == "PERSON"]
        for start, end, source in candidates(case["text"], doc):
            label = any(s < end and start < e for s, e in persons)
            rows.append((i, start, end, features(case, doc, start, end, source, lex, vectors),
                         label))
    return rows


def fit(rows):
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(DictVectorizer(), LogisticRegression(C=1.0, max_iter=3000,
                                                                random_state=SEED))
    return model.fit([r[3] for r in rows], [r[4] for r in rows])


def classifier_results(model, cases: list[dict], rows, threshold: float,
                       placeholders: dict) -> list[Result]:
    spans: dict[int, list] = {i: [] for i in range(len(cases))}
    if rows:
        probabilities = model.predict_proba([r[3] for r in rows])[:, 1]
        for (i, start, end, _, _), p in zip(rows, probabilities, strict=True):
            if p >= threshold:
                spans[i].append(("PERSON", start, end))
    return [Result(masked(c["text"], spans[i], placeholders), spans[i])
            for i, c in enumerate(cases)]


def score(title: str, model, test: list[dict], rows, rules: list[Result], placeholders,
          show: int) -> dict[str, dict]:
    systems = {"rules": rules}
    for threshold in THRESHOLDS:
        alone = classifier_results(model, test, rows, threshold, placeholders)
        systems[f"clf>={threshold}"] = alone
        systems[f"rules+clf>={threshold}"] = union(test, rules, alone, placeholders)
    ms = {name: evaluate(test, res, placeholders) for name, res in systems.items()}
    table(title, ms, placeholders)
    by_set(test, systems, placeholders)
    base = {x[:3] for x in ms["rules"]["misses"]}
    for threshold in THRESHOLDS:
        name = f"rules+clf>={threshold}"
        recovered = [x for x in ms["rules"]["misses"] if x[:3] not in
                     {y[:3] for y in ms[name]["misses"]}]
        broken = [a for a in ms[name]["alarms"] if a not in ms["rules"]["alarms"]]
        print(f"  {name}: rules' misses recovered {len(recovered)} of {len(base)}, "
              f"new false alarms {len(broken)}")
        if threshold == THRESHOLDS[1]:
            for x in recovered[:show]:
                print(f"    + {x[0]} {x[1]} {x[2]!r}")
            for a in broken[:show]:
                print(f"    - {a[0]} {a[1]} {a[2]!r} | {a[3][:80]!r}")
    print()
    return ms


def main() -> None:
    import spacy
    from kedro.config import OmegaConfigLoader

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--show", type=int, default=15)
    parser.add_argument("--vectors", action="store_true",
                        help="add the unit mean of GiNZA's word vectors over a Japanese "
                             "candidate's tokens as features")
    parser.add_argument("--rules-cache", type=Path, default=Path("/tmp/pii_probe_rules.json"))
    args = parser.parse_args()

    # Development only: the held_out split is dropped before anything else touches it.
    params = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="local")[
        "parameters"]["pii"]
    cases = [c for c in load_cases(set(params["placeholders"])) if c["split"] == "development"]
    placeholders = params["placeholders"]
    rules_all, _ = rules_results(cases, params, args.rules_cache, print)
    rules_by_id = dict(zip([c["id"] for c in cases], rules_all, strict=True))
    lex = Lexicons(params)
    print(f"lexicons: {len(lex.given):,} given names, {len(lex.public):,} public figures, "
          f"{len(lex.brands):,} brands")

    nlp = spacy.load("ja_ginza")
    ja = [c for c in cases if c["language"] == "ja"]
    docs = {c["id"]: doc for c, doc in zip(ja, nlp.pipe([c["text"] for c in ja],
                                                        batch_size=64), strict=True)}
    all_rows = rows_of(cases, docs, lex, args.vectors)
    spans_by_case: dict[int, list[tuple[int, int]]] = {}
    for i, start, end, _, _ in all_rows:
        spans_by_case.setdefault(i, []).append((start, end))
    persons = [(i, e) for i, c in enumerate(cases) for e in c["entities"]
               if e["type"] == "PERSON"]
    covered = sum(any(s <= e["start"] and e["end"] <= t for s, t in spans_by_case.get(i, []))
                  for i, e in persons)
    print(f"{len(all_rows):,} candidates, {sum(r[4] for r in all_rows):,} of them persons; "
          f"labelled persons inside some candidate: {covered} of {len(persons)}\n")

    def part(chosen: list[dict]):
        ids = {c["id"] for c in chosen}
        local = {c["id"]: j for j, c in enumerate(chosen)}
        return [(local[cases[r[0]]["id"]], *r[1:]) for r in all_rows if cases[r[0]]["id"] in ids]

    pooled: dict[str, dict] = {}
    for k, group in enumerate(groups_of(cases, args.folds)):
        test = [c for c in cases if case_set(c["id"]) in group]
        train = [c for c in cases if case_set(c["id"]) not in group]
        model = fit(part(train))
        ms = score(f"fold {k + 1}: test sets {', '.join(group)} ({len(test)} cases)", model,
                   test, part(test), [rules_by_id[c["id"]] for c in test], placeholders,
                   args.show)
        for name, m in ms.items():
            add(pooled.setdefault(name, {}), m)
    table("cross-validation, pooled over the folds", pooled, placeholders)

    test = [c for c in cases if set_number(case_set(c["id"])) >= 16]
    train = [c for c in cases if set_number(case_set(c["id"])) < 16]
    model = fit(part(train))
    blind = ", ".join(dict.fromkeys(case_set(c["id"]) for c in test))
    score(f"chronological: trained on sets 0-15 ({len(train)} cases), scored on the blind "
          f"sets {blind} ({len(test)} cases)", model, test, part(test), [rules_by_id[c["id"]] for c in test], placeholders, args.show)


if __name__ == "__main__":
    main()
