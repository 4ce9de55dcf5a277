"""Shared by the benchmarks that read a project's saved (Kedro-versioned) artefacts."""

from __future__ import annotations

import sys
from pathlib import Path


def latest_version(versioned: Path) -> Path:
    """``<versioned>/<latest version>/<name>``, Kedro's versioned layout; exits with the
    command to run when nothing has been saved there yet."""
    versions = sorted(versioned.glob("*/*"))
    if not versions:
        sys.exit(f"no saved version under {versioned}: run `kedro run --pipelines="
                 "data_processing,thinking_sft,training` in the project first")
    return versions[-1]
