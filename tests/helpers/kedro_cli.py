"""Running `kedro` commands in a project from tests, as a user would from a shell."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def kedro(project: Path, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    """``python -m kedro <args>`` in ``project``: telemetry off, the project's logging config.

    ``timeout`` only guards against a hung run: the seed data's cleaning and training take
    about 4 minutes on 2 idle cores and over 5 with another job beside them.
    """
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "COLUMNS": "200"}
    env.pop("KEDRO_LOGGING_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "kedro", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def ok(result: subprocess.CompletedProcess) -> str:
    """The command's output, after asserting it succeeded (showing its tail if not)."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr
