"""The `data_processing` pipeline.

``four_class_partitions`` + ``seed_dataset`` (raw bytes) -> ``train_records`` /
``val_records`` / ``test_records`` (primary), ``quarantined_records`` /
``duplicate_records`` / ``near_duplicate_groups`` (intermediate), ``data_quality_report`` /
``label_distribution_plot`` (reporting). The rules live in :mod:`so8t_kedro.records`
(``nodes.py`` names the function behind each node that reads parameters; cleaning,
deduplication and the report are the records functions themselves, and
:func:`so8t_kedro.records.cleaning.clean_records` also runs in the evaluation pipeline on
external test sets).
"""

from kedro.pipeline import Node, Pipeline

from so8t_kedro.records.cleaning import clean_records
from so8t_kedro.records.deduplication import deduplicate_records
from so8t_kedro.records.quality_report import data_quality_report, label_distribution_figure

from .nodes import (
    collect_quarantined_records,
    group_near_duplicates,
    ingest_raw_records,
    split_records,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Ingest -> clean -> deduplicate -> group near duplicates -> split, then report."""
    return Pipeline(
        [
            Node(
                func=ingest_raw_records,
                inputs=["four_class_partitions", "seed_dataset", "params:data_processing.ingest"],
                outputs=["raw_records", "ingest_quarantine", "ingest_summary"],
                name="ingest_raw_records",
            ),
            Node(
                func=clean_records,
                inputs=["raw_records", "params:data_processing.clean"],
                outputs=["cleaned_records", "clean_quarantine", "pii_counts"],
                name="clean_records",
            ),
            Node(
                func=deduplicate_records,
                inputs="cleaned_records",
                outputs=["unique_records", "duplicate_records", "conflict_quarantine"],
                name="deduplicate_records",
            ),
            Node(
                func=group_near_duplicates,
                inputs=["unique_records", "params:data_processing.near_duplicates"],
                outputs=["near_duplicate_groups", "near_duplicate_summary"],
                name="group_near_duplicates",
            ),
            Node(
                func=collect_quarantined_records,
                inputs=[
                    "ingest_quarantine",
                    "clean_quarantine",
                    "conflict_quarantine",
                    "params:data_processing.clean",
                ],
                outputs="quarantined_records",
                name="collect_quarantined_records",
            ),
            Node(
                func=split_records,
                inputs=[
                    "unique_records",
                    "near_duplicate_groups",
                    "near_duplicate_summary",
                    "params:data_processing.split",
                ],
                outputs=["train_records", "val_records", "test_records", "split_summary"],
                name="split_records",
            ),
            Node(
                func=data_quality_report,
                inputs=[
                    "ingest_summary",
                    "pii_counts",
                    "quarantined_records",
                    "duplicate_records",
                    "split_summary",
                ],
                outputs="data_quality_report",
                name="build_data_quality_report",
                tags=["report"],
            ),
            Node(
                func=label_distribution_figure,
                inputs=["train_records", "val_records", "test_records"],
                outputs="label_distribution_plot",
                name="plot_label_distribution",
                tags=["report"],
            ),
        ],
        tags="data_processing",
    )
