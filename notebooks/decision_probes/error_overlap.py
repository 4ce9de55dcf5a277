"""Where the retrained model and the reference classifier go wrong, request by request
(exploration, not product code).

Reads the label scores `recipe_epochs.py` saved (`<work-dir>/<tag>_<seed>.npz`, last epoch),
fits the reference classifier on the train split as the evaluation does, and prints per split
the macro-F1 of each, of their mean-probability ensemble, and how many requests both, only
the model, or only the reference decide wrongly.

    python notebooks/decision_probes/error_overlap.py /tmp/recipe_epochs/recipe_42.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from reference_ngrams import reference_and_splits
from scipy.special import softmax
from sklearn.metrics import f1_score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scores", type=Path, nargs="+", help="recipe_epochs.py's .npz files")
    args = parser.parse_args()
    from so8t_kedro.decision.reference_classifier import fit_on_records, reference_scores
    from so8t_kedro.labels import LABELS

    reference_params, train, splits = reference_and_splits()
    reference = fit_on_records(train, reference_params)
    labels = np.asarray(LABELS)
    for path in args.scores:
        saved = np.load(path)
        last = max(int(key.split("_")[1]) for key in saved if key.startswith("test_"))
        for name, records in splits.items():
            gold = records["label"].to_numpy()
            model = softmax(saved[f"{name}_{last}"], axis=1)
            ref = softmax(reference_scores(reference, records["text"].tolist()), axis=1)
            model_wrong = labels[model.argmax(1)] != gold
            ref_wrong = labels[ref.argmax(1)] != gold

            def f1(probabilities: np.ndarray, gold: np.ndarray = gold) -> float:
                return f1_score(gold, labels[probabilities.argmax(1)], average="macro")

            print(f"{path.stem} epoch {last} {name}: macro-F1 model {f1(model):.3f}, "
                  f"reference {f1(ref):.3f}, mean-probability ensemble {f1(model + ref):.3f}; "
                  f"wrong: both {int((model_wrong & ref_wrong).sum())}, model only "
                  f"{int((model_wrong & ~ref_wrong).sum())}, reference only "
                  f"{int((~model_wrong & ref_wrong).sum())} of {len(gold)}")


if __name__ == "__main__":
    main()
