"""The exploration notebook runs top to bottom on a freshly processed project."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers.project import use_seed_subset

NOTEBOOK = "notebooks/explore_processed_data.ipynb"


@pytest.mark.slow
def test_notebook_shows_the_processed_data(project_root: Path, kedro_project: Path):
    from kedro.framework.session import KedroSession

    use_seed_subset(kedro_project, 50)
    with KedroSession.create(project_path=kedro_project) as session:
        session.run(pipeline_names=["data_processing"])

    notebook = nbformat.read(project_root / NOTEBOOK, as_version=4)
    (kedro_project / "notebooks").mkdir()
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(kedro_project / "notebooks")}},
    )
    client.execute()

    outputs = [
        "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.outputs)
        for cell in notebook.cells
        if cell.cell_type == "code"
    ]
    assert not any(o.output_type == "error" for c in notebook.cells for o in c.get("outputs", []))
    seed = kedro_project / "data/01_raw/so8t_seed_dataset.jsonl"
    n_seed = len(seed.read_text(encoding="utf-8").splitlines())
    assert f"{n_seed} processed records" in outputs[1]
    for label in ("ALLOW", "ESCALATION", "DENY", "REFUSE"):
        assert label in outputs[1]
    # the accounting line: every seed line read is accounted for
    assert f"lines_read : {n_seed} == {n_seed}" in outputs[-1]
