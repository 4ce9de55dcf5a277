"""Nodes that more than one pipeline runs, declared once.

The evaluation and ab_test pipelines both need the evaluation set and the reference
classifier; each declares these same nodes (function, name, inputs, outputs), so either
pipeline runs alone and ``__default__`` runs each node once. A module, not a pipeline
package: ``find_pipelines`` registers folders only.
"""

from kedro.pipeline import Node

from so8t_kedro.decision.reference_classifier import fit_on_records
from so8t_kedro.records.evaluation_set import prepare_evaluation_set


def evaluation_set_and_reference_nodes() -> list[Node]:
    """``prepare_evaluation_set`` (test split or external JSONL) and
    ``fit_reference_classifier`` (on the train split)."""
    return [
        Node(
            func=prepare_evaluation_set,
            inputs=["test_records", "external_test_files", "params:evaluation.test_set",
                    "params:data_processing.clean"],
            outputs=["evaluation_set", "evaluation_set_quarantine"],
            name="prepare_evaluation_set",
        ),
        Node(
            func=fit_on_records,
            inputs=["train_records", "params:evaluation.reference_classifier"],
            outputs="reference_classifier",
            name="fit_reference_classifier",
        ),
    ]
