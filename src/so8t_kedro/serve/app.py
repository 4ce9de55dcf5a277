"""The /think HTTP service: FastAPI, served by uvicorn.

Routes (schema at ``GET /openapi.json``):

* ``POST /think`` ``{"text", "language"}`` (:class:`ThinkRequest`) ->
  ``{"request_id", "final", "decision", "probabilities", "format_ok", "fallback",
  "latency_ms"}`` (:class:`ThinkResponse`);
* ``GET /healthz`` -> ``{"status": "ok"}``; ``GET /`` -> a page to try the service.

Every error, FastAPI's own 404 / 405 / 422 included, is JSON
``{"error": {"status": N, "message": "..."}}``: 401 (API key missing or wrong, with
``WWW-Authenticate``), 413 (body or text too large), 422 (not a valid request), 429 (rate
limit, with ``Retry-After``), 500 (a fixed message; the details go to the server log only).
Messages never quote the request.

:class:`RequestGuard`, the outermost layer of the app, gives every request an id and one
audit line (written before the response leaves: a client that has its answer can rely on
its line), and in front of ``/think`` checks, in order, the per-client rate limit, the API
key and the body size, so that a refused request is never read. The model runs in
FastAPI's thread pool; ``ThinkService`` serialises the calls on its one model.

Binding: loopback by default. Any other address needs an API key (:func:`check_bind`),
compared in constant time; a key, once configured, is required on loopback too.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import socket
import time
import uuid
from base64 import b64encode
from dataclasses import dataclass
from importlib.resources import files
from typing import Literal

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from so8t_kedro import __version__
from so8t_kedro.labels import LABELS
from so8t_kedro.serve.audit import AuditLog
from so8t_kedro.serve.inference import ThinkService, request_audit_fields
from so8t_kedro.serve.policy import ReplyPolicy
from so8t_kedro.serve.ratelimit import RateLimiter
from so8t_kedro.think import LANGUAGES

logger = logging.getLogger(__name__)

THINK_PATH = "/think"
#: Paths written to the audit log as requested; any other path is the client's text.
KNOWN_PATHS = frozenset({THINK_PATH, "/healthz", "/", "/openapi.json"})
#: Methods written to the audit log as sent; any other method name is the client's text.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
#: Shorter keys can be guessed; the server refuses them.
MIN_API_KEY_CHARS = 16


@dataclass(frozen=True)
class ServerLimits:
    """Bounds on what one client can make the server do."""

    max_request_chars: int = 4000
    max_body_bytes: int = 64 * 1024
    rate_per_s: float = 1.0
    burst: int = 5


# ----------------------------------------------------------------------- schema


class ThinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="the request, verbatim (at most the server's "
                                  "max_request_chars characters)",
                      examples=["東京で美味しいラーメン屋を教えてください。"])
    language: Literal[LANGUAGES] = Field("ja", description="the request's language")


class ThinkResponse(BaseModel):
    request_id: str = Field(description="also the X-Request-Id header and the audit line's id")
    final: str = Field(description="the reply shown: the model's answer, the class's policy "
                                   "reply or the fallback message; never any thinking")
    decision: Literal[LABELS]
    probabilities: dict[str, float] = Field(description="the four labels' probabilities, in "
                                                        "label order")
    format_ok: bool = Field(description="the generation kept the /think format")
    fallback: bool = Field(description="the fixed fallback message is shown")
    latency_ms: float


class ErrorDetail(BaseModel):
    status: int
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class HealthResponse(BaseModel):
    status: Literal["ok"]


def error_response(status: int, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status, headers)


# ---------------------------------------------------------------------- binding


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, it may not stay loopback


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse (``ValueError``, saying why) a non-loopback bind without an API key, and a
    key too short to resist guessing."""
    if api_key is not None and len(api_key) < MIN_API_KEY_CHARS:
        raise ValueError(f"the API key has {len(api_key)} characters; at least "
                         f"{MIN_API_KEY_CHARS} are required")
    if api_key is None and not is_loopback(host):
        raise ValueError(f"refusing to serve on {host} without an API key: anyone who can "
                         "reach it could use the model. Set SO8T_THINK_API_KEY or "
                         "think_api.api_key in conf/local/credentials.yml, or bind 127.0.0.1")


# ------------------------------------------------------------------------ guard


class RequestGuard:
    """Request id, audit line, and the checks in front of ``/think`` (pure ASGI)."""

    def __init__(self, app: ASGIApp, *, audit: AuditLog, limits: ServerLimits,
                 rate_limiter: RateLimiter, api_key: str | None):
        self.app = app
        self.audit = audit
        self.limits = limits
        self.rate_limiter = rate_limiter
        self._key = None if api_key is None else api_key.encode("utf-8")

    def _refusal(self, scope: Scope) -> tuple[int, str, dict[str, str]] | None:
        """``(status, message, headers)`` when ``/think`` refuses the request unread."""
        headers = Headers(scope=scope)
        wait = self.rate_limiter.acquire(scope["client"][0] if scope.get("client") else "")
        if wait > 0:
            return 429, "rate limit exceeded", {"Retry-After": str(max(1, math.ceil(wait)))}
        if self._key is not None:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            # compare_digest: the time taken does not tell how much of the key was right.
            if not (scheme.lower() == "bearer"
                    and hmac.compare_digest(given.strip().encode("utf-8"), self._key)):
                return 401, "a valid API key is required", {"WWW-Authenticate": "Bearer"}
        length = headers.get("content-length")
        if length is not None and length.isascii() and length.isdigit() \
                and int(length) > self.limits.max_body_bytes:
            return 413, f"the body is larger than {self.limits.max_body_bytes} bytes", {}
        return None

    def _bounded(self, receive: Receive) -> Receive:
        """``receive`` that refuses a body (chunked, or longer than announced) once it
        passes the limit; FastAPI answers the HTTPException as a 413."""
        seen = 0

        async def receive_bounded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limits.max_body_bytes:
                    raise HTTPException(413, f"the body is larger than "
                                             f"{self.limits.max_body_bytes} bytes")
            return message

        return receive_bounded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        request_id = uuid.uuid4().hex
        fields: dict = {}  # the endpoint adds the request's and the answer's audit fields
        scope.setdefault("state", {}).update(request_id=request_id, audit=fields, began=began)
        responded = False

        async def send_audited(message: Message) -> None:
            nonlocal responded
            if message["type"] == "http.response.start":
                responded = True
                method, path = scope["method"], scope["path"]
                self.audit.append({
                    "request_id": request_id,
                    "client": scope["client"][0] if scope.get("client") else None,
                    "method": method if method in KNOWN_METHODS else None,
                    "path": path if path in KNOWN_PATHS else None,
                    "status": message["status"],
                    "latency_ms": round((time.perf_counter() - began) * 1e3, 3),
                    **fields,
                })
                MutableHeaders(scope=message)["X-Request-Id"] = request_id
            await send(message)

        try:
            refusal = self._refusal(scope) if scope["path"] == THINK_PATH else None
            if refusal is not None:
                status, fields["error"], headers = refusal
                await error_response(status, fields["error"], headers)(scope, receive,
                                                                       send_audited)
            else:
                await self.app(scope, self._bounded(receive), send_audited)
        except Exception:
            # The traceback may quote the request or generated text: server log only.
            logger.exception("request %s failed", request_id)
            if not responded:  # else the client has its status already: nothing to add
                fields["error"] = "internal error"
                await error_response(500, "internal error")(scope, receive, send_audited)


# -------------------------------------------------------------------------- app


def _page() -> tuple[str, str]:
    """The page and its Content-Security-Policy: only its own inline script (by hash) and
    style run, and it may only talk to this server."""
    page = files("so8t_kedro.serve").joinpath("page.html").read_text("utf-8")
    script = page.split("<script>", 1)[1].split("</script>", 1)[0]
    style = page.split("<style>", 1)[1].split("</style>", 1)[0]

    def digest(text: str) -> str:
        return "'sha256-" + b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"

    policy = (f"default-src 'none'; script-src {digest(script)}; style-src {digest(style)}; "
              "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
    return page, policy


def create_app(service: ThinkService, policy: ReplyPolicy, audit: AuditLog, *,
               limits: ServerLimits = ServerLimits(), api_key: str | None = None,
               rate_limiter: RateLimiter | None = None) -> FastAPI:
    """The /think app around one loaded service (one model per process)."""
    app = FastAPI(title="so8t /think", version=__version__, docs_url=None, redoc_url=None,
                  description="Only the final reply and the four-class decision go out, "
                              "never the thinking.")
    page, page_policy = _page()
    error_responses = {status: {"model": ErrorResponse}
                       for status in (401, 413, 422, 429, 500)}

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        request.state.audit["error"] = str(error.detail)
        return error_response(error.status_code, str(error.detail), error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        # A known field's name and the problem only: pydantic's error also carries the
        # input, and the name of an unexpected field is the client's text too.
        first = error.errors()[0]
        field = first["loc"][1] if len(first["loc"]) > 1 else None
        message = f"{field if field in ThinkRequest.model_fields else 'body'}: {first['msg']}"
        request.state.audit["error"] = message
        return error_response(422, message)

    @app.post(THINK_PATH, response_model=ThinkResponse, responses=error_responses)
    def think(body: ThinkRequest, request: Request) -> dict:
        """Answer one /think request."""
        if not body.text.strip():
            raise HTTPException(422, "text: the request is empty")
        if len(body.text) > limits.max_request_chars:
            raise HTTPException(413, f"text: longer than {limits.max_request_chars} "
                                     "characters")
        state = request.state
        state.audit.update(request_audit_fields(body.text, body.language))
        answer = policy.answer(service.assess(body.text, body.language), body.language)
        state.audit.update(answer.audit_fields())
        return answer.response(state.request_id, (time.perf_counter() - state.began) * 1e3)

    @app.get("/healthz", response_model=HealthResponse)
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": page_policy,
                                           "X-Content-Type-Options": "nosniff"})

    app.add_middleware(RequestGuard, audit=audit, limits=limits, api_key=api_key,
                       rate_limiter=rate_limiter or RateLimiter(limits.rate_per_s,
                                                                limits.burst))
    return app


# ----------------------------------------------------------------------- server


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)  # a burst of clients waits for a 429 instead of a refused connection
    return sock


def socket_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_server(app: FastAPI, *, log_level: str = "warning") -> uvicorn.Server:
    """uvicorn serving ``app`` in this process (``Server.run``: one worker, so one model
    per process). Forwarded-for headers are not trusted: the rate limit and the audit log
    see the connecting address."""
    return uvicorn.Server(uvicorn.Config(app, proxy_headers=False,
                                         server_header=False, access_log=False,
                                         log_level=log_level))
