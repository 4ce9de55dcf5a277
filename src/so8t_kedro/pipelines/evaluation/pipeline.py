"""The `evaluation` pipeline: the four-class decision of one model, measured and reported.

evaluation set (test split or external JSONL) + validation split -> predictions of the model
``params:evaluation.model`` (resolved once, by ``resolve_evaluation_model``, into the
in-memory ``evaluation_model``) -> temperature calibration -> metrics -> plots -> HTML report.
Beside it, on the same sets and with the same metrics code: the reference classifier
(fitted on the train split, saved as the versioned ``reference_classifier``) and the
majority class.
"""

from kedro.pipeline import Node, Pipeline

from so8t_kedro.pipelines.shared_nodes import (
    evaluation_set_and_reference_nodes,
    model_reference_node,
)

from .nodes import (
    compute_baseline_metrics,
    compute_evaluation_metrics,
    fit_temperature_calibration,
    plot_confusion_matrix,
    plot_per_class_metrics,
    plot_reliability_diagram,
    render_evaluation_report,
    score_reference_on_validation_and_evaluation_sets,
    score_validation_and_evaluation_sets,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            *evaluation_set_and_reference_nodes(),
            model_reference_node("resolve_evaluation_model", "evaluation_model",
                                 "params:evaluation.model"),
            Node(
                func=score_validation_and_evaluation_sets,
                inputs=["val_records", "evaluation_set", "evaluation_model", "params:scoring",
                        "params:thinking_sft.format"],
                outputs=["validation_predictions", "evaluation_predictions"],
                name="score_validation_and_evaluation_sets",
            ),
            Node(
                func=fit_temperature_calibration,
                inputs=["validation_predictions", "params:evaluation.ece_bins"],
                outputs="evaluation_calibration",
                name="fit_temperature_calibration",
            ),
            Node(
                func=score_reference_on_validation_and_evaluation_sets,
                inputs=["reference_classifier", "val_records", "evaluation_set"],
                outputs=["reference_validation_predictions", "reference_evaluation_predictions"],
                name="score_reference_on_validation_and_evaluation_sets",
            ),
            Node(
                func=compute_baseline_metrics,
                inputs=["reference_validation_predictions", "reference_evaluation_predictions",
                        "train_records", "params:evaluation"],
                outputs="evaluation_baseline_metrics",
                name="compute_baseline_metrics",
            ),
            Node(
                func=compute_evaluation_metrics,
                inputs=["evaluation_predictions", "evaluation_calibration",
                        "evaluation_baseline_metrics", "params:evaluation"],
                outputs="evaluation_metrics",
                name="compute_evaluation_metrics",
            ),
            Node(
                func=plot_confusion_matrix,
                inputs="evaluation_metrics",
                outputs="evaluation_confusion_matrix@figure",
                name="plot_confusion_matrix",
                tags=["report"],
            ),
            Node(
                func=plot_reliability_diagram,
                inputs=["evaluation_predictions", "evaluation_calibration",
                        "params:evaluation.ece_bins"],
                outputs="evaluation_reliability_diagram@figure",
                name="plot_reliability_diagram",
                tags=["report"],
            ),
            Node(
                func=plot_per_class_metrics,
                inputs="evaluation_metrics",
                outputs="evaluation_per_class_scores@figure",
                name="plot_per_class_metrics",
                tags=["report"],
            ),
            Node(
                func=render_evaluation_report,
                inputs=["evaluation_metrics", "evaluation_calibration",
                        "evaluation_confusion_matrix@png",
                        "evaluation_reliability_diagram@png",
                        "evaluation_per_class_scores@png"],
                outputs="evaluation_report",
                name="render_evaluation_report",
                tags=["report"],
            ),
        ],
        tags=["evaluation"],
    )
