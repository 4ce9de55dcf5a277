"""Shared test fixtures (keep small: pipeline-specific ones live next to their tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before anything imports kedro: no telemetry prompt or upload from tests.
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def project_root() -> Path:
    """The repository root (pyproject.toml, conf/, data/)."""
    return PROJECT_ROOT


@pytest.fixture
def kedro_project(project_root: Path, tmp_path: Path, monkeypatch) -> Path:
    """A bootstrapped copy of the project under tmp_path (conf, pyproject, shipped seed data).

    Runs write their outputs under the copy's data/, never into the repository.
    """
    import shutil
    import sys

    from kedro.framework.startup import bootstrap_project

    shutil.copytree(
        project_root / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local")
    )
    (tmp_path / "conf/local").mkdir()
    shutil.copy(project_root / "pyproject.toml", tmp_path)
    shutil.copy(project_root / ".telemetry", tmp_path)
    (tmp_path / "src").mkdir()  # bootstrap_project wants the source dir to exist
    raw = tmp_path / "data/01_raw"
    (raw / "four_class").mkdir(parents=True)
    shutil.copy(project_root / "data/01_raw/so8t_seed_dataset.jsonl", raw)

    # bootstrap_project edits sys.path and PYTHONPATH; give both back afterwards.
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    bootstrap_project(tmp_path)
    return tmp_path
