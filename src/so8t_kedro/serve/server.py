"""The /think HTTP endpoint on the standard library's ``ThreadingHTTPServer``.

``POST /think`` with ``{"text": "...", "language": "ja" | "en"}`` (language optional,
default ``ja``) answers ``{"request_id", "final", "decision", "probabilities",
"format_ok", "fallback", "latency_ms"}``; ``GET /health`` answers ``{"status": "ok"}``.
Every other outcome is a JSON error ``{"error": {"status": N, "message": "..."}}``:
400 (bad JSON, missing or mistyped field), 404 (unknown path), 405 (wrong method),
411 (no Content-Length), 413 (body or text too large), 429 (rate limit, with
``Retry-After``), 500 (internal: a fixed message, the details go to the server's log only).

Every response, the rejected ones too, appends one line to the audit log. The server binds
to 127.0.0.1 by default: it has no authentication and is meant to sit behind a gateway that
has. HTTP/1.0 (one request per connection) keeps the error paths simple: a body that is
refused unread can never be mistaken for the next request.
"""

from __future__ import annotations

import json
import logging
import math
import re
import socket
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from so8t_kedro.serve.audit import AuditLog
from so8t_kedro.serve.inference import ThinkService, request_audit_fields
from so8t_kedro.serve.ratelimit import RateLimiter
from so8t_kedro.think_format import LANGUAGES

logger = logging.getLogger(__name__)

#: path -> the methods it answers
ROUTES: dict[str, tuple[str, ...]] = {"/think": ("POST",), "/health": ("GET",)}
#: A refused body is still read (up to this many bytes, for at most this long) before the
#: socket closes: closing a socket with unread input sends a TCP reset, and a reset can
#: destroy the error response before the client has read it.
DRAIN_MAX_BYTES = 1 << 20
DRAIN_TIMEOUT_S = 2.0
#: Methods written to the audit log as sent; any other method name is the client's text.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")  # ASCII digits only (str.isdigit takes "²")


@dataclass(frozen=True)
class ServerLimits:
    """Bounds on what one client can make the server do."""

    max_request_chars: int = 4000
    max_body_bytes: int = 64 * 1024
    rate_per_s: float = 1.0
    burst: int = 5
    socket_timeout_s: float = 30.0  # a client that stops sending mid-request is dropped


class HttpError(Exception):
    """A request refused with ``status``; ``message`` is shown to the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class ThinkServer(ThreadingHTTPServer):
    """The /think server: a service, an audit log, limits and a rate limiter."""

    daemon_threads = True
    # socketserver's default backlog of 5 refuses connections in a burst of clients before
    # the rate limiter can answer them with 429.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], service: ThinkService, audit: AuditLog,
                 limits: ServerLimits = ServerLimits(),
                 rate_limiter: RateLimiter | None = None):
        self.service = service
        self.audit = audit
        self.limits = limits
        self.rate_limiter = rate_limiter or RateLimiter(limits.rate_per_s, limits.burst)
        super().__init__(address, ThinkRequestHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def parse_think_request(body: bytes, limits: ServerLimits) -> tuple[str, str]:
    """``(text, language)`` from a POST /think body, or an :class:`HttpError` 400 / 413."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HttpError(400, "the body is not valid UTF-8 JSON") from None
    if not isinstance(payload, dict):
        raise HttpError(400, "the body must be a JSON object")
    if "text" not in payload:
        raise HttpError(400, "missing field: text")
    text, language = payload["text"], payload.get("language", "ja")
    if not isinstance(text, str):
        raise HttpError(400, "field text must be a string")
    if not text.strip():
        raise HttpError(400, "field text is empty")
    if len(text) > limits.max_request_chars:
        raise HttpError(413, f"field text is longer than {limits.max_request_chars} characters")
    if not isinstance(language, str) or language not in LANGUAGES:
        raise HttpError(400, f"field language must be one of {', '.join(LANGUAGES)}")
    return text, language


class ThinkRequestHandler(BaseHTTPRequestHandler):
    server: ThinkServer
    server_version = "so8t-think"
    sys_version = ""  # do not advertise the Python version

    def setup(self) -> None:
        self.timeout = self.server.limits.socket_timeout_s
        super().setup()

    def handle_one_request(self) -> None:
        self._began = time.perf_counter()
        self._request_id = uuid.uuid4().hex
        self._audit: dict = {}
        self._unread = 0  # bytes of request body not read (yet)
        self._responded = False
        super().handle_one_request()

    def log_message(self, format: str, *args) -> None:
        # The access line goes to logging (debug), not stderr; the audit log is the record.
        logger.debug("%s %s", self.address_string(), format % args)

    # ------------------------------------------------------------------ routing

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        header = self.headers.get("Content-Length")
        length = int(header) if header and _CONTENT_LENGTH.fullmatch(header.strip()) else None
        self._unread = length or 0  # whatever the answer, this body is read or drained
        try:
            path = urlsplit(self.path).path
            methods = ROUTES.get(path)
            if methods is None:
                raise HttpError(404, "unknown path")
            if self.command not in methods:
                raise HttpError(405, f"method {self.command} is not allowed here",
                                {"Allow": ", ".join(methods)})
            if path == "/health":
                self._send(200, {"status": "ok"})
            else:
                self._think(header, length)
        except HttpError as error:
            self._send_error(error.status, error.message, error.headers)
        except Exception:
            # The traceback may quote the request or generated text: server log only.
            logger.exception("request %s failed", self._request_id)
            if not self._responded:  # else the client is gone mid-answer: nothing to send
                self._send_error(500, "internal error")

    def _think(self, header: str | None, length: int | None) -> None:
        limits = self.server.limits
        wait = self.server.rate_limiter.acquire(self.client_address[0])
        if wait > 0:
            raise HttpError(429, "rate limit exceeded",
                            {"Retry-After": str(max(1, math.ceil(wait)))})
        if header is None:
            raise HttpError(411, "Content-Length is required")
        if length is None:
            raise HttpError(400, "Content-Length is not a number")
        if length > limits.max_body_bytes:
            raise HttpError(413, f"the body is larger than {limits.max_body_bytes} bytes")
        body = self.rfile.read(length)
        self._unread = 0
        if len(body) < length:
            raise HttpError(400, "the body is shorter than its Content-Length")
        text, language = parse_think_request(body, limits)
        self._audit.update(request_audit_fields(text, language))
        answer = self.server.service.answer(text, language)
        self._audit.update(answer.audit_fields())
        self._send(200, answer.response(self._request_id, self._elapsed_ms()))

    def _drain(self) -> None:
        """Half-close, then read and drop the unread body (bounded; see DRAIN_MAX_BYTES)."""
        remaining = min(self._unread, DRAIN_MAX_BYTES)
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(DRAIN_TIMEOUT_S)
            while remaining > 0:
                chunk = self.rfile.read1(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass  # the client went away or stalled: nothing left to protect

    # ---------------------------------------------------------------- responses

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """http.server's own errors (bad request line, unsupported method, header too long)
        as JSON and audited, like ours. Its message can quote the raw request line, so
        only the status phrase is sent and logged. http.server calls this only from
        ``handle_one_request``, after ours has set the request's state."""
        self._send_error(code, HTTPStatus(code).phrase)

    def _send_error(self, status: int, message: str, headers: dict[str, str] | None = None):
        self._audit["error"] = message
        self._send(status, {"error": {"status": status, "message": message}}, headers)

    def _elapsed_ms(self) -> float:
        return (time.perf_counter() - self._began) * 1e3

    def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None):
        """Audit, then answer: a client that has its answer can rely on its audit line."""
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        path = urlsplit(self.path).path if getattr(self, "path", None) else None
        self.server.audit.append({
            "request_id": self._request_id,
            "client": self.client_address[0],
            "method": self.command if self.command in _METHODS else None,
            # An unknown path is the client's text: only known routes are logged.
            "path": path if path in ROUTES else None,
            "status": status,
            "latency_ms": round(self._elapsed_ms(), 3),
            **self._audit,
        })
        self._responded = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", self._request_id)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        if self._unread:
            self._drain()


def make_server(service: ThinkService, audit_path, *, host: str = "127.0.0.1",
                port: int = 8080, limits: ServerLimits = ServerLimits()) -> ThinkServer:
    """A bound, not yet serving :class:`ThinkServer` (port 0: any free port, see ``url``)."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("serving /think on %s: the endpoint has no authentication", host)
    return ThinkServer((host, port), service, AuditLog(audit_path), limits)
