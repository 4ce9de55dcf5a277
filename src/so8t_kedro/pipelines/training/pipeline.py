"""The `training` pipeline: embedded base model -> SO8T QLoRA training -> learning curve."""

from kedro.pipeline import Node, Pipeline

from .nodes import build_embedded_base_model, plot_learning_curve, train_so8t_adapter


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
                func=train_so8t_adapter,
                inputs=[
                    "embedded_base_model",
                    "thinking_sft_dataset",
                    "params:base_model",
                    "params:training",
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
