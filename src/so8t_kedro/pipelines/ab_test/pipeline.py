"""The `ab_test` pipeline: model A (default: the original base) against model B (default:
the retrained SO8T adapter), paired on the same evaluation set; either arm can be the
reference classifier instead (``kind: reference_classifier``).

Its ``prepare_evaluation_set`` and ``fit_reference_classifier`` nodes are the evaluation
pipeline's (``pipelines/shared_nodes.py``), so either pipeline runs alone and
``__default__`` runs each once. Each arm's model is resolved once (``resolve_model_a`` /
``resolve_model_b``, into the in-memory ``ab_model_a`` / ``ab_model_b``).
"""

from kedro.pipeline import Node, Pipeline

from so8t_kedro.pipelines.shared_nodes import (
    evaluation_set_and_reference_nodes,
    model_reference_node,
)

from .nodes import compare_models, plot_ab_comparison, render_ab_test_report, score_arm


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            *evaluation_set_and_reference_nodes(),
            *(
                model_reference_node(f"resolve_model_{arm}", f"ab_model_{arm}",
                                     f"params:ab_test.model_{arm}")
                for arm in ("a", "b")
            ),
            *(
                Node(
                    func=score_arm,
                    inputs=["evaluation_set", "reference_classifier", f"ab_model_{arm}",
                            "params:scoring", "params:thinking_sft.format"],
                    outputs=f"ab_predictions_{arm}",
                    name=f"score_model_{arm}",
                )
                for arm in ("a", "b")
            ),
            Node(
                func=compare_models,
                inputs=["ab_predictions_a", "ab_predictions_b", "params:ab_test"],
                outputs="ab_test_results",
                name="compare_models",
            ),
            Node(
                func=plot_ab_comparison,
                inputs=["ab_test_results", "ab_predictions_a", "ab_predictions_b"],
                outputs="ab_test_comparison@figure",
                name="plot_ab_comparison",
                tags=["report"],
            ),
            Node(
                func=render_ab_test_report,
                inputs=["ab_test_results", "ab_test_comparison@png"],
                outputs="ab_test_report",
                name="render_ab_test_report",
                tags=["report"],
            ),
        ],
        tags=["ab_test"],
    )
