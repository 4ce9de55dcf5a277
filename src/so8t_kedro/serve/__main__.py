"""``python -m so8t_kedro.serve``: answer one request, or serve the /think HTTP API.

    python -m so8t_kedro.serve --model-dir DIR [--gguf FILE] "request text"
    python -m so8t_kedro.serve --model-dir DIR --http [--host 127.0.0.1 --port 8080]

One request prints the JSON answer (the HTTP response body) on stdout. Both modes append
to the audit log (``--audit-log``); its default lies under ``data/``, which git ignores.
The reply policy and the API key come from the project's conf (``--conf-source``,
``--env``; see ``serve.config``). A non-loopback ``--host`` without an API key is refused
before the model loads.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid

from so8t_kedro.export.llama_process import EXTRA_BUFFER_MODES
from so8t_kedro.serve.app import (
    ServerLimits,
    bind_socket,
    check_bind,
    create_app,
    socket_url,
    uvicorn_server,
)
from so8t_kedro.serve.audit import AuditLog
from so8t_kedro.serve.config import load_serve_conf
from so8t_kedro.serve.inference import load_service, request_audit_fields
from so8t_kedro.think import FORMATS, LANGUAGES

DEFAULT_AUDIT_LOG = "data/08_reporting/think_audit.jsonl"


def build_parser() -> argparse.ArgumentParser:
    limits = ServerLimits()
    parser = argparse.ArgumentParser(
        prog="python -m so8t_kedro.serve",
        description="Answer /think requests with a Phi-3 model: only the final reply and "
                    "the four-class decision are shown, never the thinking.")
    parser.add_argument("text", nargs="?", help="one request to answer (omit with --http)")
    parser.add_argument("--model-dir", required=True,
                        help="stock Phi-3 Hugging Face directory (e.g. the baked model)")
    parser.add_argument("--gguf", help="run this GGUF file with llama.cpp instead; "
                                       "--model-dir then gives its tokenizer")
    parser.add_argument("--llama-extra-buffers", choices=EXTRA_BUFFER_MODES, default="off",
                        help="llama.cpp's AMX/repack weight layouts for --gguf: off (safe on "
                             "every CPU), auto (where a one-time probe proved them), on")
    parser.add_argument("--language", choices=LANGUAGES, default="ja",
                        help="language of the one request (default: ja)")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="calibrated temperature for the decision probabilities")
    parser.add_argument("--format", choices=FORMATS, default="quadruple", dest="fmt",
                        help="the /think format the model was trained on")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--conf-source", default="conf",
                        help="the project's conf folder (reply policy, API key)")
    parser.add_argument("--env", default=None, help="conf environment (default: local)")
    parser.add_argument("--audit-log", default=DEFAULT_AUDIT_LOG)
    parser.add_argument("--http", action="store_true", help="serve the /think HTTP API")
    parser.add_argument("--host", default="127.0.0.1",
                        help="any address but loopback needs an API key")
    parser.add_argument("--port", type=int, default=8080, help="0: any free port")
    parser.add_argument("--max-request-chars", type=int, default=limits.max_request_chars)
    parser.add_argument("--max-body-bytes", type=int, default=limits.max_body_bytes)
    parser.add_argument("--rate", type=float, default=limits.rate_per_s,
                        help="requests per second per client, sustained")
    parser.add_argument("--burst", type=int, default=limits.burst,
                        help="requests per client allowed at once")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.http == (args.text is not None):
        parser.error("give either one request text or --http")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        policy, api_key = load_serve_conf(args.conf_source, args.env)
        if args.http:
            check_bind(args.host, api_key)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    service = load_service(args.model_dir, gguf=args.gguf, max_new_tokens=args.max_new_tokens,
                           temperature=args.temperature, fmt=args.fmt, device=args.device,
                           extra_buffer_types=args.llama_extra_buffers)
    audit = AuditLog(args.audit_log)
    if args.http:
        limits = ServerLimits(max_request_chars=args.max_request_chars,
                              max_body_bytes=args.max_body_bytes, rate_per_s=args.rate,
                              burst=args.burst)
        app = create_app(service, policy, audit, limits=limits, api_key=api_key)
        sock = bind_socket(args.host, args.port)
        print(f"serving /think on {socket_url(sock)}", file=sys.stderr, flush=True)
        uvicorn_server(app, log_level="info").run(sockets=[sock])
        return 0

    request_id = uuid.uuid4().hex
    answer = policy.answer(service.assess(args.text, args.language), args.language)
    latency_ms = answer.assessment.latency_ms
    audit.append({"request_id": request_id, "client": "cli", "status": 200,
                  "latency_ms": round(latency_ms, 3),
                  **request_audit_fields(args.text, args.language), **answer.audit_fields()})
    print(json.dumps(answer.response(request_id, latency_ms), ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
