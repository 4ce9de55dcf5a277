"""``GET /``: the page, opened in headless Chromium against the real server.

Chromium is driven over its DevTools protocol on ``--remote-debugging-pipe`` (file
descriptors 3 and 4, NUL-separated JSON): no browser-driver package. The test types a
Japanese request into the page, presses send, and reads what the page shows.

Artefact: a screenshot under pytest's tmp path, copied to ``$SO8T_TEST_ARTIFACTS/serve/``
when that variable is set.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from so8t_kedro.decision.metrics import softmax
from so8t_kedro.labels import LABELS
from so8t_kedro.serve import ThinkService
from tests.helpers.chromium import chromium_binary

SECRET = "PAGE-SECRET-THOUGHT-51c2"
REQUEST = "肉じゃがの作り方を教えてください。"
ANSWER = "じゃがいも、牛肉、玉ねぎを炒めてから煮込みます。"
SCORES = (-0.2, -1.5, -2.5, -4.0)
TIMEOUT_S = 60


class DevToolsPipe:
    """One headless Chromium and its DevTools protocol over a pipe."""

    def __init__(self, chromium: str, profile: Path):
        to_chromium, self._commands = os.pipe()
        self._events, from_chromium = os.pipe()
        # Chromium reads commands on fd 3 and writes on fd 4. bash moves the pipe ends there
        # (a preexec_fn would run Python in a forked child of a threaded process).
        moves = f"3<&{to_chromium} 4>&{from_chromium} {to_chromium}<&- {from_chromium}>&-"
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" {moves}', chromium, "--headless", "--no-sandbox",
             "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
             "--remote-debugging-pipe", "--window-size=1000,900", "about:blank"],
            pass_fds=(to_chromium, from_chromium), stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        os.close(to_chromium)
        os.close(from_chromium)
        self._buffer = b""
        self._next_id = 0

    def send(self, method: str, params: dict | None = None, session: str | None = None):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:  # events and other answers are skipped
            while b"\0" not in self._buffer:
                chunk = os.read(self._events, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"chromium exited: {self.process.stderr.read()[-2000:]}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def evaluate(self, session: str, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        os.close(self._commands)
        os.close(self._events)
        self.process.stderr.close()


# Waits until the page shows a result (or an error) and returns what it shows.
READ_PAGE = """(async () => {
  const $ = (id) => document.getElementById(id);
  const deadline = Date.now() + TIMEOUT_MS;
  while ($("result").hidden && !$("error").textContent) {
    if (Date.now() > deadline) throw new Error("the page showed no answer");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {final: $("final").textContent, decision: $("decision").textContent,
          fallback: $("fallback").textContent, latency: $("latency").textContent,
          roundTrip: $("round-trip").textContent, requestId: $("request-id").textContent,
          error: $("error").textContent, html: document.documentElement.outerHTML,
          chosen: [...document.querySelectorAll("#probabilities tr.chosen")].map(
            (row) => row.dataset.label),
          probabilities: [...$("probabilities").tBodies[0].rows].map(
            (row) => [row.dataset.label, row.cells[1].textContent])};
})()""".replace("TIMEOUT_MS", str(TIMEOUT_S * 1000))


def test_page_shows_reply_decision_probabilities_and_latency(scripted, start_server,
                                                             tmp_path):
    chromium = chromium_binary()
    reply = (f"<think-task>{SECRET}</think-task><think-safety>{SECRET}</think-safety>"
             f"<think-policy>{SECRET}</think-policy><final>判定: ALLOW\n{ANSWER}</final>")
    server = start_server(ThinkService(scripted(reply=reply, scores=SCORES)))
    browser = DevToolsPipe(chromium, tmp_path / "chromium-profile")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget",
                               {"targetId": target, "flatten": True})["sessionId"]
        browser.send("Page.navigate", {"url": server.url + "/"}, session)  # returns on commit
        browser.evaluate(session, "new Promise((resolve) => document.readyState === "
                                  "'complete' ? resolve() : addEventListener('load', resolve))")
        browser.evaluate(session, "document.getElementById('text').focus()")
        browser.send("Input.insertText", {"text": REQUEST}, session)  # typed, as a person
        browser.evaluate(session, "document.getElementById('submit').click()")
        shown = browser.evaluate(session, READ_PAGE)
        screenshot = browser.send("Page.captureScreenshot", {}, session)["data"]
    finally:
        browser.close()
    shot = tmp_path / "page.png"
    shot.write_bytes(base64.b64decode(screenshot))
    if os.environ.get("SO8T_TEST_ARTIFACTS"):
        target_dir = Path(os.environ["SO8T_TEST_ARTIFACTS"]) / "serve"
        target_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target_dir / shot.name)

    assert shown["error"] == ""
    assert shown["final"] == ANSWER  # the model's answer, without its 判定 line
    assert (shown["decision"], shown["fallback"], shown["chosen"]) == ("ALLOW", "false",
                                                                       ["ALLOW"])
    expected = softmax(np.asarray([SCORES]))[0]
    assert [label for label, _ in shown["probabilities"]] == list(LABELS)
    # The page rounds to 4 decimals: half a unit in the last place.
    assert np.allclose([float(p) for _, p in shown["probabilities"]], expected, atol=5e-5)
    assert float(shown["latency"]) > 0 and float(shown["roundTrip"]) >= float(shown["latency"])
    assert SECRET not in shown["html"]

    lines = server.audit_lines()  # the page, and the request it sent, audited as any other
    assert {"path": "/", "status": 200} in [{"path": x["path"], "status": x["status"]}
                                            for x in lines]
    (line,) = [x for x in lines if x["path"] == "/think"]
    assert (line["request_id"], line["status"], line["request_chars"], line["language"]) == (
        shown["requestId"], 200, len(REQUEST), "ja")


def test_page_is_self_contained(scripted, make_app):
    from fastapi.testclient import TestClient

    response = TestClient(make_app(ThinkService(scripted())).app).get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "text/html")
    page = response.text
    assert "http://" not in page and "https://" not in page and " src=" not in page
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy


@pytest.fixture(autouse=True)
def _chromium_needs_no_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
