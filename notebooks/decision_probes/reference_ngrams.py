"""What the reference classifier owes to character n-grams longer than one, per language
(exploration, not product code).

The reference (`evaluation.reference_classifier`) refitted with character n-grams up to 1,
2 and 3 on the train split, scored on the validation and test splits, macro-F1 overall and
per language. A model that only sees a bag of single characters can reach the first row,
not the last; `recipe_epochs.py`'s per-language figures are read against it.

    python notebooks/decision_probes/reference_ngrams.py

Reads the catalog's train/val/test records (run `kedro run --pipelines=data_processing`
first).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def reference_and_splits():
    """``params:evaluation.reference_classifier``, the train records and the held-out
    ones by split (``val``, ``test``), as the project's catalog loads them."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT_ROOT)
    with KedroSession.create(project_path=PROJECT_ROOT) as session:
        context = session.load_context()
        return (context.params["evaluation"]["reference_classifier"],
                context.catalog.load("train_records"),
                {"val": context.catalog.load("val_records"),
                 "test": context.catalog.load("test_records")})


def main() -> None:
    from sklearn.metrics import f1_score

    from so8t_kedro.decision.reference_classifier import fit_on_records, reference_scores
    from so8t_kedro.labels import LABELS

    reference, train, held_out = reference_and_splits()
    for longest in (1, 2, 3):
        params = copy.deepcopy(reference)
        params["tfidf"]["ngram_range"] = [1, longest]
        classifier = fit_on_records(train, params)
        for split, records in held_out.items():
            predicted = reference_scores(classifier, records["text"].tolist()).argmax(1)
            predicted = [LABELS[i] for i in predicted]
            cells = [f"all {f1_score(records['label'], predicted, average='macro'):.3f}"]
            for language in sorted(records["language"].unique()):
                rows = (records["language"] == language).to_numpy()
                cells.append(f"{language} ({rows.sum()}) "
                             f"{f1_score(records['label'][rows], [p for p, r in zip(predicted, rows) if r], average='macro'):.3f}")
            print(f"char_wb 1-{longest}-grams, {split}: macro-F1 " + ", ".join(cells))


if __name__ == "__main__":
    main()
