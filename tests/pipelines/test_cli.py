"""The commands the README gives work from a shell, in both pipeline-option spellings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.kedro_cli import kedro, ok
from tests.helpers.project import use_seed_subset

PIPELINES = {"__default__", "data_processing", "thinking_sft", "training", "evaluation",
             "ab_test", "export"}


def test_registry_lists_the_six_pipelines(project_root: Path):
    result = kedro(project_root, "registry", "list")
    assert result.returncode == 0, result.stderr
    listed = {line[2:].strip() for line in result.stdout.splitlines() if line.startswith("- ")}
    assert listed == PIPELINES


@pytest.mark.slow
def test_kedro_run_pipelines_builds_the_sft_dataset(kedro_project: Path):
    ok(kedro(kedro_project, "run", "--pipelines=data_processing,thinking_sft"))
    sft_versions = list((kedro_project / "data/05_model_input/thinking_sft").glob("*/*/*.jsonl"))
    assert len(sft_versions) == 1
    lines = sft_versions[0].read_text(encoding="utf-8").splitlines()
    seed = kedro_project / "data/01_raw/so8t_seed_dataset.jsonl"
    # every shipped seed record (none is quarantined or a duplicate) becomes one SFT sample
    assert len(lines) == len(seed.read_text(encoding="utf-8").splitlines())


@pytest.mark.slow
def test_parallel_runner_runs_data_processing(kedro_project: Path):
    use_seed_subset(kedro_project, 50)
    ok(kedro(kedro_project, "run", "--pipelines=data_processing", "--runner=ParallelRunner"))
    assert len(list((kedro_project / "data/03_primary").glob("four_class_*.jsonl/*/*"))) == 3


@pytest.mark.slow
def test_deprecated_pipeline_option_still_runs(kedro_project: Path):
    """Kedro's older ``--pipeline`` takes one name (no comma list) and still works."""
    use_seed_subset(kedro_project, 50)
    ok(kedro(kedro_project, "run", "--pipeline=data_processing"))
    splits = list((kedro_project / "data/03_primary").glob("four_class_*.jsonl/*/*.jsonl"))
    assert len(splits) == 3


def test_every_node_carries_its_pipeline_tag(kedro_project: Path):
    """`--tags=<pipeline>` selects that pipeline's nodes; plots and reports add `report`."""
    from kedro.framework.project import pipelines

    for name, pipeline in pipelines.items():
        for node in pipeline.nodes if name != "__default__" else []:
            assert name in node.tags, (name, node.name)
            if node.name.startswith("plot_") or node.name.endswith("_report"):
                assert "report" in node.tags, node.name
