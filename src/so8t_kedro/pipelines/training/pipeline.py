"""The `training` pipeline: embedded base model, the reference classifier's cross-fitted
scores of the train requests (the distillation targets) -> (optional) Optuna search -> SO8T
QLoRA training with the search's best parameters -> learning curve and search plots.

The search nodes carry the ``hpo`` tag: ``kedro run --pipelines=training --tags=hpo
--params=hpo.enabled=true`` runs the study alone, on the ``embedded_base_model`` and
``training_samples`` an earlier run persisted. A search run writes nothing that another
worker reads: several such workers start at once on one study, and two Kedro sessions
begun in the same millisecond share a save version, so two workers both saving the samples
could collide. With ``hpo.enabled: false`` (the default) the search node returns no
overrides at once.
"""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    attach_reference_scores,
    build_embedded_base_model,
    plot_hpo_study,
    plot_learning_curve,
    train_so8t_adapter,
    tune_hyperparameters,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=build_embedded_base_model,
                inputs=["thinking_sft_dataset", "params:base_model.embedded"],
                outputs="embedded_base_model",
                name="build_embedded_base_model",
            ),
            Node(
                func=attach_reference_scores,
                inputs=[
                    "thinking_sft_dataset",
                    "train_records",
                    "params:evaluation.reference_classifier",
                    "params:training.distillation",
                ],
                outputs="training_samples",
                name="attach_reference_scores",
            ),
            Node(
                func=tune_hyperparameters,
                inputs=["embedded_base_model", "training_samples", "params:base_model",
                        "params:training", "params:hpo", "hpo_study_storage"],
                outputs=["hpo_best_params", "hpo_trials"],
                name="tune_hyperparameters",
                tags=["hpo"],
            ),
            Node(
                func=plot_hpo_study,
                inputs=["hpo_trials", "params:hpo", "hpo_study_storage"],
                outputs=["hpo_optimization_history_plot", "hpo_param_importances_plot"],
                name="plot_hpo_study",
                tags=["hpo", "report"],
            ),
            Node(
                func=train_so8t_adapter,
                inputs=[
                    "embedded_base_model",
                    "training_samples",
                    "params:base_model",
                    "params:training",
                    "hpo_best_params",
                ],
                outputs=["so8t_adapter", "training_history", "training_summary"],
                name="train_so8t_adapter",
            ),
            Node(
                func=plot_learning_curve,
                inputs="training_history",
                outputs="learning_curve_plot",
                name="plot_learning_curve",
                tags=["report"],
            ),
        ],
        tags=["training"],
    )
