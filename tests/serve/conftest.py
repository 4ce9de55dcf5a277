"""Fixtures of the /think serving tests: the tiny model as a service, a scripted backend
whose raw replies are crafted by the test, and a server on an ephemeral localhost port."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable

import numpy as np
import pytest

from so8t_kedro.serve import ServerLimits, ThinkService, load_service
from so8t_kedro.serve.audit import AuditLog
from so8t_kedro.serve.backends import Generation
from so8t_kedro.serve.ratelimit import RateLimiter
from so8t_kedro.serve.server import ThinkServer

#: Test limits: generous rate so that only the rate-limit tests meet it.
TEST_LIMITS = ServerLimits(max_request_chars=200, max_body_bytes=2048, rate_per_s=1000.0,
                           burst=1000)


class ScriptedBackend:
    """Returns ``reply`` as the raw generation and ``scores`` as the label log-likelihoods;
    records the prompts it was given. ``error``: raised by ``generate`` instead."""

    def __init__(self, reply: str = "<final>判定: ALLOW\nok</final>",
                 scores=(0.0, -1.0, -2.0, -3.0), error: Exception | None = None):
        self.reply = reply
        self.scores = np.asarray(scores, dtype=float)
        self.error = error
        self.prompts: list[str] = []

    def generate(self, prompt: str, max_new_tokens: int) -> Generation:
        self.prompts.append(prompt)
        if self.error is not None:
            raise self.error
        return Generation(self.reply, prompt_tokens=len(prompt), new_tokens=7, seconds=0.001)

    def label_log_likelihoods(self, text: str, language: str) -> np.ndarray:
        return self.scores


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="session")
def tiny_service(tiny_base_dir) -> ThinkService:
    """The tiny model served on the CPU, 12 new tokens per answer."""
    return load_service(tiny_base_dir, max_new_tokens=12, device="cpu")


@pytest.fixture
def start_server(tmp_path) -> Callable[..., ThinkServer]:
    """``start_server(service, limits=..., rate_limiter=...)``: a server serving in a thread
    on 127.0.0.1 (any free port), shut down after the test; its audit log lies in tmp_path."""
    started: list[tuple[ThinkServer, threading.Thread]] = []

    def start(service, *, limits: ServerLimits = TEST_LIMITS,
              rate_limiter: RateLimiter | None = None) -> ThinkServer:
        server = ThinkServer(("127.0.0.1", 0), service,
                             AuditLog(tmp_path / f"audit{len(started)}.jsonl"), limits,
                             rate_limiter)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class Reply:
    def __init__(self, status: int, headers: http.client.HTTPMessage, raw: bytes):
        self.status, self.headers, self.raw = status, headers, raw

    @property
    def json(self):
        return json.loads(self.raw.decode("utf-8"))


def _call(server: ThinkServer, method: str, path: str, body: bytes | dict | None = None,
          headers: dict[str, str] | None = None) -> Reply:
    if isinstance(body, dict):
        body = json.dumps(body, ensure_ascii=False).encode("utf-8")
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def _audit_lines(server: ThinkServer) -> list[dict]:
    return [json.loads(line) for line in server.audit.path.read_text("utf-8").splitlines()]


# Helpers reach the tests as fixtures (a conftest is not imported by test modules).


@pytest.fixture
def call() -> Callable[..., Reply]:
    """``call(server, method, path, body=None, headers=None)``: one HTTP exchange; a dict
    body is sent as JSON. The reply has ``status``, ``headers``, ``raw`` and ``json``."""
    return _call


@pytest.fixture
def audit_lines() -> Callable[[ThinkServer], list[dict]]:
    """``audit_lines(server)``: the server's audit log, parsed line by line."""
    return _audit_lines


@pytest.fixture
def scripted() -> type[ScriptedBackend]:
    """The :class:`ScriptedBackend` class: ``scripted(reply=..., scores=..., error=...)``."""
    return ScriptedBackend


@pytest.fixture
def clock() -> Clock:
    return Clock()
