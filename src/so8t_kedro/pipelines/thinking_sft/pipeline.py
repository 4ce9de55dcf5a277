"""The `thinking_sft` pipeline: train/val/test records -> /think SFT samples + stats."""

from kedro.pipeline import Pipeline, node

from .nodes import combine_splits, render_thinking_sft_samples, summarise_thinking_sft


def create_pipeline(**kwargs) -> Pipeline:
    """Combine the splits, render every record in the /think format, summarise."""
    return Pipeline(
        [
            node(
                combine_splits,
                inputs=["train_records", "val_records", "test_records"],
                outputs="thinking_sft_source_records",
                name="combine_thinking_sft_splits",
            ),
            node(
                render_thinking_sft_samples,
                inputs=["thinking_sft_source_records", "think_phrase_bank", "params:thinking_sft"],
                outputs="thinking_sft_dataset",
                name="render_thinking_sft_samples",
            ),
            node(
                summarise_thinking_sft,
                inputs="thinking_sft_dataset",
                outputs="thinking_sft_stats",
                name="summarise_thinking_sft",
                tags=["report"],
            ),
        ],
        tags=["thinking_sft"],
    )
