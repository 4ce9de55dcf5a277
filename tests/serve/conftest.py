"""Fixtures of the /think serving tests: the tiny model as a service, a scripted backend
whose raw replies are crafted by the test, the project's reply policy, and the app served
by uvicorn on an ephemeral 127.0.0.1 port (or driven in-process by FastAPI's TestClient)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI

from so8t_kedro.serve import ReplyPolicy, ServerLimits, ThinkService, create_app, load_service
from so8t_kedro.serve.app import bind_socket, socket_url, uvicorn_server
from so8t_kedro.serve.audit import AuditLog
from so8t_kedro.serve.backends import Generation
from so8t_kedro.serve.config import load_serve_conf
from so8t_kedro.serve.ratelimit import RateLimiter

#: Test limits: generous rate so that only the rate-limit tests meet it.
TEST_LIMITS = ServerLimits(max_request_chars=200, max_body_bytes=2048, rate_per_s=1000.0,
                           burst=1000)
PROJECT_CONF = Path(__file__).resolve().parents[2] / "conf"


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


@dataclass
class Served:
    """An app, its audit log and, when uvicorn serves it, its URL."""

    app: FastAPI
    audit: AuditLog
    url: str | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    def audit_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.audit.path.read_text("utf-8").splitlines()]


@pytest.fixture(scope="session")
def policy() -> ReplyPolicy:
    """The project's reply policy (conf/base/parameters_serve.yml)."""
    return load_serve_conf(PROJECT_CONF, "base")[0]


@pytest.fixture(scope="session")
def tiny_service(tiny_base_dir) -> ThinkService:
    """The tiny model served on the CPU, 12 new tokens per answer."""
    return load_service(tiny_base_dir, max_new_tokens=12, device="cpu")


@pytest.fixture
def make_app(tmp_path, policy) -> Callable[..., Served]:
    """``make_app(service, policy=..., limits=..., rate_limiter=..., api_key=...)``: the app
    (not served), its audit log in tmp_path."""
    made: list[Served] = []

    def make(service, *, reply_policy: ReplyPolicy | None = None,
             limits: ServerLimits = TEST_LIMITS, rate_limiter: RateLimiter | None = None,
             api_key: str | None = None) -> Served:
        audit = AuditLog(tmp_path / f"audit{len(made)}.jsonl")
        app = create_app(service, reply_policy or policy, audit, limits=limits,
                         api_key=api_key, rate_limiter=rate_limiter)
        made.append(Served(app, audit))
        return made[-1]

    return make


@pytest.fixture
def start_server(make_app) -> Callable[..., Served]:
    """Like ``make_app``, served by uvicorn in a thread on 127.0.0.1 (any free port) and
    shut down after the test."""
    running: list[tuple[object, threading.Thread]] = []

    def start(service, **options) -> Served:
        served = make_app(service, **options)
        sock = bind_socket("127.0.0.1", 0)
        server = uvicorn_server(served.app)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        running.append((server, thread))
        served.url = socket_url(sock)
        return served

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=10)


class Reply:
    def __init__(self, status: int, headers: http.client.HTTPMessage, raw: bytes):
        self.status, self.headers, self.raw = status, headers, raw

    @property
    def json(self):
        return json.loads(self.raw.decode("utf-8"))


def _call(served: Served, method: str, path: str, body: bytes | dict | None = None,
          headers: dict[str, str] | None = None) -> Reply:
    if isinstance(body, dict):
        body = json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", **(headers or {})}
    connection = http.client.HTTPConnection(*served.address, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


# Helpers reach the tests as fixtures (a conftest is not imported by test modules).


@pytest.fixture
def call() -> Callable[..., Reply]:
    """``call(served, method, path, body=None, headers=None)``: one HTTP exchange with a
    running server; a dict body is sent as JSON (with its Content-Type). The reply has ``status``, ``headers``,
    ``raw`` and ``json``."""
    return _call


@pytest.fixture
def scripted() -> type[ScriptedBackend]:
    """The :class:`ScriptedBackend` class: ``scripted(reply=..., scores=..., error=...)``."""
    return ScriptedBackend


@pytest.fixture
def clock() -> Clock:
    return Clock()
