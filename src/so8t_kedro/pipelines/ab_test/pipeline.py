"""The `ab_test` pipeline: model A (default: the original base) against model B (default:
the retrained SO8T adapter), paired on the same evaluation set; either arm can be the
reference classifier instead (``kind: reference_classifier``).

It shares the evaluation pipeline's ``prepare_evaluation_set`` and
``fit_reference_classifier`` nodes and scoring functions, so either pipeline runs alone.
"""

from kedro.pipeline import Node, Pipeline

from so8t_kedro.pipelines.evaluation.pipeline import (
    MODEL_INPUTS,
    SCORING_INPUTS,
    fit_reference_classifier_node,
    prepare_evaluation_set_node,
)

from .nodes import compare_models, plot_ab_comparison, render_ab_test_report, score_arm


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            prepare_evaluation_set_node,
            fit_reference_classifier_node,
            *(
                Node(
                    func=score_arm,
                    inputs=["evaluation_set", "reference_classifier", *MODEL_INPUTS,
                            f"params:ab_test.model_{arm}", *SCORING_INPUTS],
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
