"""Nodes that more than one pipeline runs, declared once.

The evaluation and ab_test pipelines both need the evaluation set and the reference
classifier; each declares these same nodes (function, name, inputs, outputs), so either
pipeline runs alone and ``__default__`` runs each node once.

Every pipeline that scores, exports or serves a model resolves "which base, which adapter"
in one node of its own (:func:`model_reference_node`), from the persisted base and adapter,
so it still runs alone on them; its nodes take the resulting
:class:`~so8t_kedro.models.selection.ModelReference` (in memory) instead of resolving it
again. A module, not a pipeline package: ``find_pipelines`` registers folders only.
"""

from kedro.pipeline import Node

from so8t_kedro.decision.reference_classifier import fit_on_records
from so8t_kedro.models.selection import resolve_catalog_adapter, resolve_model
from so8t_kedro.records.evaluation_set import prepare_evaluation_set

#: What a model reference is resolved from: the embedded base and ``so8t_adapter`` as the
#: catalog loads them (latest, or ``--load-versions``), and ``base_model.path``.
MODEL_SOURCES = ["embedded_base_model", "so8t_adapter", "params:base_model"]


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


def model_reference_node(name: str, output: str, spec: str | None = None) -> Node:
    """The node ``name`` that resolves a model once into ``output`` (a ``ModelReference``):
    the model the parameters entry ``spec`` names (``{name, adapter}``, and ``kind`` for an
    A/B arm), or with ``spec`` None ``so8t_adapter`` as the catalog loads it."""
    if spec is None:
        return Node(func=resolve_catalog_adapter, inputs=MODEL_SOURCES, outputs=output,
                    name=name)
    return Node(func=resolve_model, inputs=[*MODEL_SOURCES, spec], outputs=output, name=name)
