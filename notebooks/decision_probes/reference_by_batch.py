"""How much of the reference classifier's test figure the seed batches of 8f2e062 explain
(exploration, not product code).

The reference (`evaluation.reference_classifier`) fitted on the whole train split and on
its requests from before 8f2e062 alone (seed ids below 5000), each scored on the
validation and test splits: all requests, the requests from before 8f2e062 and those it
added, macro-F1.

    python notebooks/decision_probes/reference_by_batch.py

Reads the catalog's train/val/test records (run `kedro run --pipelines=data_processing`
first).
"""

from __future__ import annotations

import pandas as pd
from reference_ngrams import reference_and_splits

# Seed ids of the four batches 8f2e062 added: seed-<label>-5001 to -5375.
FIRST_ADDED_ID = 5000


def added(records: pd.DataFrame) -> pd.Series:
    """Whether each record comes from the batches 8f2e062 added."""
    return records["id"].str.rsplit("-", n=1).str[-1].astype(int) > FIRST_ADDED_ID


def main() -> None:
    from sklearn.metrics import f1_score

    from so8t_kedro.decision.reference_classifier import fit_on_records, reference_scores
    from so8t_kedro.labels import LABELS

    reference, train, held_out = reference_and_splits()
    for name, fitted_on in (("all train requests", train),
                            ("train requests before 8f2e062", train[~added(train)])):
        classifier = fit_on_records(fitted_on, reference)
        for split, records in held_out.items():
            predicted = pd.Series(
                [LABELS[i] for i in reference_scores(classifier, records["text"].tolist()).argmax(1)],
                index=records.index)
            new = added(records)
            cells = [f"{part} ({rows.sum()}) "
                     f"{f1_score(records['label'][rows], predicted[rows], average='macro'):.3f}"
                     for part, rows in (("all", new | ~new), ("before", ~new), ("added", new))]
            print(f"fitted on {name} ({len(fitted_on)}), {split}: macro-F1 " + ", ".join(cells))


if __name__ == "__main__":
    main()
