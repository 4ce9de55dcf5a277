"""Would a stronger teacher help the distillation term? The reference classifier and a few
variants of it (exploration, not product code).

Each variant is fitted on the train split and scored on the validation and test splits
(macro-F1), and cross-fitted on the train split as the training's `attach_reference_scores`
node does (5 stratified folds; the out-of-fold macro-F1 is how good the soft targets the
model learns from are). The reference's own cross-fitting is also run with 10 and 20 folds.
A teacher is worth training with only if it is better on validation. One variant is not a
change of the reference's parameters: `char_and_lemma_teacher`, the reference's character
n-grams beside word 1-2-grams of GiNZA's lemmas (its Sudachi tokenizer, installed with
ja-ginza; English words as spaCy's tokenizer splits them), which `recipe_epochs.py
--lemma-teacher` distils from.

    python notebooks/decision_probes/teacher_variants.py

Reads the catalog's train/val/test records (run `kedro run --pipelines=data_processing`
first).
"""

from __future__ import annotations

import copy
import itertools
import os
import sys
from pathlib import Path

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

sys.path.insert(0, str(Path(__file__).parent))
from reference_ngrams import reference_and_splits


def variants(reference: dict) -> dict[str, dict]:
    """The reference's parameters and one change each."""
    def changed(section: str, **values) -> dict:
        params = copy.deepcopy(reference)
        params[section].update(values)
        return params

    return {
        "reference (char_wb 1-3, C 10)": reference,
        "char_wb 1-4-grams": changed("tfidf", ngram_range=[1, 4]),
        "C 30": changed("logistic_regression", C=30.0),
        "C 3": changed("logistic_regression", C=3.0),
        "char 2-4-grams": changed("tfidf", analyzer="char", ngram_range=[2, 4]),
    }


def char_and_lemma_teacher(reference: dict):
    """An unfitted scikit-learn pipeline: the reference's TF-IDF and a word TF-IDF over the
    lemmas and lemma bigrams of GiNZA's tokenizer, side by side, into the reference's
    logistic regression (its classes are the label ids when fitted on them)."""
    import spacy
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    tokenizer = spacy.load("ja_ginza").tokenizer

    def lemma_grams(text: str) -> list[str]:
        lemmas = [(token.lemma_ or token.text).lower() for token in tokenizer(text)
                  if not token.is_space]
        return lemmas + [f"{a} {b}" for a, b in itertools.pairwise(lemmas)]

    tfidf = dict(reference["tfidf"], ngram_range=tuple(reference["tfidf"]["ngram_range"]))
    return make_pipeline(
        make_union(TfidfVectorizer(**tfidf),
                   TfidfVectorizer(analyzer=lemma_grams, sublinear_tf=True)),
        LogisticRegression(**reference["logistic_regression"],
                           random_state=int(reference["seed"])))


def cross_fitted_teacher_scores(teacher, texts: list[str], labels: list[str],
                                folds: int, seed: int):
    """[N, 4] logits of each request from ``teacher`` fitted on the other folds: the
    soft targets of the distillation, as ``cross_fitted_scores`` gives the reference's."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from so8t_kedro.labels import LABEL_TO_ID

    return cross_val_predict(teacher, texts, [LABEL_TO_ID[label] for label in labels],
                             cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                             method="decision_function")


def main() -> None:
    from sklearn.metrics import f1_score

    from so8t_kedro.decision.reference_classifier import (
        cross_fitted_scores,
        fit_on_records,
        reference_scores,
    )
    from so8t_kedro.labels import LABEL_TO_ID

    reference, train, held_out = reference_and_splits()

    def macro_f1(labels, scores) -> float:
        return f1_score([LABEL_TO_ID[label] for label in labels], scores.argmax(axis=1),
                        average="macro")

    texts, labels = train["text"].tolist(), train["label"].tolist()

    def row(name: str, scores_of, out_of_fold) -> None:
        """One table line: a fitted teacher's scores on each held-out split, and its
        cross-fitted scores of the train split."""
        scored = {split: macro_f1(records["label"], scores_of(records["text"].tolist()))
                  for split, records in held_out.items()}
        print(f"{name:32} {scored['val']:6.3f} {scored['test']:6.3f} "
              f"{macro_f1(labels, out_of_fold):16.3f}")

    print(f"{'teacher':32} {'val':>6} {'test':>6} {'out-of-fold (5)':>16}")
    for name, params in variants(reference).items():
        classifier = fit_on_records(train, params)
        row(name, lambda texts_, c=classifier: reference_scores(c, texts_),
            cross_fitted_scores(texts, labels, params, 5))
    teacher = char_and_lemma_teacher(reference)
    teacher.fit(texts, [LABEL_TO_ID[label] for label in labels])
    row("char_wb 1-3 + lemma 1-2-grams", teacher.decision_function,
        cross_fitted_teacher_scores(teacher, texts, labels, 5, int(reference["seed"])))
    for folds in (10, 20):
        oof = macro_f1(labels, cross_fitted_scores(texts, labels, reference, folds))
        print(f"reference, {folds} folds: out-of-fold {oof:.3f}")


if __name__ == "__main__":
    main()
