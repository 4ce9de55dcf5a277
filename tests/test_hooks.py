"""The project hooks on tiny pipelines run the way KedroSession runs them, and in a real run."""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from kedro.framework.hooks import _create_hook_manager
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset

from so8t_kedro.hooks import (
    CompletionNotificationHooks,
    NodeFailureHooks,
    RunSummaryHooks,
    node_failure_line,
)
from tests.helpers.project import base_parameters

MIB = 2**20


def make_rows(count: int) -> list[int]:
    return list(range(count))


def hold_64_mib_briefly(rows: list[int]) -> int:
    """Touches 64 MiB for 0.2 s and frees it: only the sampler thread can see the peak."""
    block = b"x" * (64 * MIB)
    time.sleep(0.2)
    del block
    return len(rows)


def describe(size: int) -> str:
    return f"{size} rows"


def explode(*inputs):
    raise ValueError("bad record\nsecond line of the message")


def tiny_pipeline() -> Pipeline:
    return Pipeline([
        node(make_rows, "count", "rows", name="make_rows"),
        node(hold_64_mib_briefly, "rows", "size", name="hold_64_mib_briefly"),
        node(describe, "size", "description", name="describe"),
    ])


def run_like_a_session(pipeline, catalog, hooks, *, pipeline_names=("tiny",), env=None):
    """What KedroSession.run does around the runner, with only ``hooks`` registered."""
    hook_manager = _create_hook_manager()
    for hook in hooks:
        hook_manager.register(hook)
    run_params = {"run_id": "test-run", "pipeline_names": list(pipeline_names), "env": env}
    hook_manager.hook.before_pipeline_run(run_params=run_params, pipeline=pipeline,
                                          catalog=catalog)
    try:
        result = SequentialRunner().run(pipeline, catalog, hook_manager, run_id="test-run")
    except Exception as error:
        hook_manager.hook.on_pipeline_error(error=error, run_params=run_params,
                                            pipeline=pipeline, catalog=catalog)
        raise
    hook_manager.hook.after_pipeline_run(run_params=run_params, run_result=result,
                                         pipeline=pipeline, catalog=catalog)
    return result


@pytest.fixture
def hooks_log(caplog):
    caplog.set_level(logging.INFO, logger="so8t_kedro.hooks")
    return caplog


def hook_messages(caplog, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "so8t_kedro.hooks" and r.levelno == level]


def test_summary_has_a_row_per_node_and_is_saved_to_the_catalog():
    catalog = DataCatalog({"count": MemoryDataset(3), "run_summary": MemoryDataset()})
    run_like_a_session(tiny_pipeline(), catalog, [RunSummaryHooks()])

    summary = catalog.load("run_summary")
    assert summary["status"] == "success"
    assert summary["pipelines"] == ["tiny"]
    rows = {row["node"]: row for row in summary["nodes"]}
    assert list(rows) == ["make_rows", "hold_64_mib_briefly", "describe"]
    assert all(row["wall_time_s"] > 0 and row["peak_rss_mib"] > 0 for row in rows.values())
    assert rows["hold_64_mib_briefly"]["wall_time_s"] >= 0.2
    # The 64 MiB are gone by the time the node ends: the sampler thread saw them.
    assert rows["hold_64_mib_briefly"]["peak_rss_mib"] >= rows["make_rows"]["peak_rss_mib"] + 48
    assert all(row["peak_cuda_mib"] is None for row in rows.values())  # CPU-only test run


def test_a_partial_run_without_a_run_summary_entry_still_logs_its_table(hooks_log):
    catalog = DataCatalog({"rows": MemoryDataset([1, 2])})  # no run_summary entry
    partial = tiny_pipeline().from_nodes("hold_64_mib_briefly")
    run_like_a_session(partial, catalog, [RunSummaryHooks()])

    [table] = hook_messages(hooks_log, logging.INFO)
    headline, header, *rows = table.splitlines()
    assert headline.startswith("Run summary (success): 2 nodes, ")
    assert header.split() == ["wall_time_s", "peak_rss_mib"]
    assert [row.split()[0] for row in rows] == ["hold_64_mib_briefly", "describe"]
    assert "run_summary" not in catalog


def test_the_summary_reports_cuda_peaks_once_cuda_is_in_use(monkeypatch):
    import torch

    peaks = iter([3 * MIB, 5 * MIB, 7 * MIB])
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: next(peaks))
    catalog = DataCatalog({"count": MemoryDataset(3), "run_summary": MemoryDataset()})
    run_like_a_session(tiny_pipeline(), catalog, [RunSummaryHooks()])

    assert [row["peak_cuda_mib"] for row in catalog.load("run_summary")["nodes"]] == [3, 5, 7]


def test_a_failing_node_gets_one_line_naming_it_its_inputs_and_the_resume_command(
    hooks_log, tmp_path
):
    records = JSONDataset(filepath=str(tmp_path / "records.json"))
    records.save([{"id": 1}])
    catalog = DataCatalog({"records": records, "params:threshold": MemoryDataset(0.5),
                           "run_summary": MemoryDataset()})
    pipeline = Pipeline([node(explode, ["records", "params:threshold"], "out", name="explode")])

    with pytest.raises(ValueError, match="bad record"):
        run_like_a_session(pipeline, catalog, [RunSummaryHooks(), NodeFailureHooks()],
                           pipeline_names=["training"], env="webdataset")

    [line] = hook_messages(hooks_log, logging.ERROR)
    assert line == (
        "Node explode failed (ValueError: bad record); inputs: records, params:threshold; "
        "resume with: kedro run --pipelines=training --env=webdataset --from-nodes=explode"
    )
    summary = catalog.load("run_summary")
    assert (summary["status"], summary["failed_node"]) == ("failure", "explode")
    assert [row["node"] for row in summary["nodes"]] == ["explode"]


def test_a_node_that_reads_in_memory_data_is_not_resumed_from_itself():
    failing = node(explode, ["rows", "params:threshold"], "out", name="explode")
    catalog = DataCatalog({"rows": MemoryDataset([1])})

    line = node_failure_line(ValueError("bad"), failing, catalog)

    assert "--from-nodes=explode" not in line
    assert line.endswith("rows only lived in memory, so resume with the --from-nodes "
                         "Kedro suggests next")


def notification_hooks(**run_hooks) -> CompletionNotificationHooks:
    hooks = CompletionNotificationHooks()
    settings = {**base_parameters("run_hooks"), **run_hooks}
    hooks.after_context_created(SimpleNamespace(params={"run_hooks": settings}))
    return hooks


@pytest.mark.parametrize(("fails", "status"), [(False, "success"), (True, "failure")])
def test_the_notify_command_runs_with_the_run_status(tmp_path, fails, status):
    written = tmp_path / "status.txt"
    command = f"echo $SO8T_RUN_STATUS > {shlex.quote(str(written))}"
    hooks = notification_hooks(notify_command=command)
    pipeline = Pipeline([node(explode if fails else describe,
                              "count", "out", name="last")])
    catalog = DataCatalog({"count": MemoryDataset(1)})

    if fails:
        with pytest.raises(ValueError):
            run_like_a_session(pipeline, catalog, [hooks])
    else:
        run_like_a_session(pipeline, catalog, [hooks])

    assert written.read_text().strip() == status


def test_the_notification_is_off_by_default(project_root: Path, monkeypatch):
    from kedro.config import OmegaConfigLoader

    loader = OmegaConfigLoader(conf_source=str(project_root / "conf"), base_env="base",
                               default_run_env="local")
    params = loader["parameters"]
    hooks = CompletionNotificationHooks()
    hooks.after_context_created(SimpleNamespace(params=params))

    def no_command(*args, **kwargs):
        raise AssertionError("no command should run")

    monkeypatch.setattr(subprocess, "run", no_command)
    run_like_a_session(tiny_pipeline(), DataCatalog({"count": MemoryDataset(1)}), [hooks])


@pytest.mark.parametrize(
    ("command", "warning"),
    [
        ("exit 3", "exited with 3"),
        ("so8t-no-such-command", "exited with 127"),
        ("sleep 5", "did not finish"),
    ],
)
def test_a_failing_notify_command_only_warns(hooks_log, command, warning):
    hooks = notification_hooks(notify_command=command, notify_timeout_s=0.2)
    result = run_like_a_session(Pipeline([node(describe, "count", "description")]),
                                DataCatalog({"count": MemoryDataset(1)}), [hooks])

    assert result["description"].load() == "1 rows"
    [message] = hook_messages(hooks_log, logging.WARNING)
    assert command in message and warning in message


@pytest.mark.slow
def test_a_kedro_run_saves_its_summary_and_notifies(kedro_project: Path):
    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession

    written = kedro_project / "notified.txt"
    command = f"echo $SO8T_RUN_STATUS > {shlex.quote(str(written))}"
    with KedroSession.create(project_path=kedro_project,
                             runtime_params={"run_hooks": {"notify_command": command}}) as session:
        session.run(pipeline_names=["data_processing"])

    [saved] = (kedro_project / "data/08_reporting/runs").glob("run_summary.json/*/*.json")
    summary = json.loads(saved.read_text())
    assert summary["pipelines"] == ["data_processing"]
    assert sorted(row["node"] for row in summary["nodes"]) == sorted(
        n.name for n in pipelines["data_processing"].nodes
    )
    assert written.read_text().strip() == "success"
