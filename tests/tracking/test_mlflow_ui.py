"""The MLflow UI, started as the README says (`kedro mlflow ui`), shows the tracked run in
headless Chromium."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.chromium import chromium_binary, render

STARTUP_TIMEOUT_S = 180  # MLflow's server imports a lot; a loaded CI machine is slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        assert server.poll() is None, server.stdout.read()
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"the MLflow UI did not answer {url} within {STARTUP_TIMEOUT_S} s")


@pytest.mark.slow
def test_the_mlflow_ui_lists_the_tracked_run(tracked_run: dict, tmp_path: Path):
    chromium = chromium_binary()  # fail fast, before starting the server, when it is missing
    port = free_port()
    # `kedro mlflow ui` runs the `mlflow` script of the environment Kedro runs in.
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    # Its own process group: `kedro mlflow ui` starts `mlflow ui`, which starts workers.
    server = subprocess.Popen(
        [sys.executable, "-m", "kedro", "mlflow", "ui", "--port", str(port)],
        cwd=tracked_run["project"], env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(f"{base}/health", server)
        run = tracked_run["run"]
        page = render(chromium, f"{base}/#/experiments/{run.info.experiment_id}/runs",
                      tmp_path / "runs.png", tmp_path / "profile")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    # the runs table links each run by its id, under its name
    assert f"runs/{run.info.run_id}" in page
    assert run.info.run_name in page
