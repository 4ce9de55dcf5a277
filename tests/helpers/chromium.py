"""Headless Chromium for the tests that look at a rendered page (kedro-viz, the /think
page, the MLflow UI): which binary, and one page loaded, screenshotted and dumped."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = (
    "headless Chromium is required for the tests that open a page (kedro-viz, the /think "
    "page, the MLflow UI). Install it with "
    "`sudo apt-get install -y --no-install-recommends chromium` (Debian/Ubuntu; .ci/run does "
    "this), or point SO8T_CHROMIUM at a Chrome/Chromium binary."
)


def chromium_binary() -> str:
    """The headless browser to use: $SO8T_CHROMIUM, else the first one on PATH."""
    configured = os.environ.get("SO8T_CHROMIUM")
    if configured:
        if not (shutil.which(configured) or Path(configured).is_file()):
            pytest.fail(f"SO8T_CHROMIUM={configured!r} does not exist; {INSTALL_HINT}")
        return configured
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"no Chromium on PATH ({', '.join(CHROMIUM_CANDIDATES)}); {INSTALL_HINT}")


def render(chromium: str, url: str, screenshot: Path, profile: Path) -> str:
    """Load ``url`` in headless Chromium; save a screenshot and return the rendered DOM.

    ``--virtual-time-budget`` lets the page finish its fetches and layout before the DOM
    is dumped. A fresh profile per page: kedro-viz keeps settings (active pipeline,
    "Pretty name") in localStorage.
    """
    profile.mkdir(parents=True)
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars",
        "--window-size=1600,1000", "--virtual-time-budget=20000",
        f"--screenshot={screenshot}", "--dump-dom", url,
    ]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"chromium failed on {url}:\n{result.stderr[-3000:]}"
    assert screenshot.is_file(), f"no screenshot of {url}:\n{result.stderr[-3000:]}"
    return result.stdout
