"""Load test of the /think HTTP service on the embedded model (loopback only, bounded).

In one run (nothing is downloaded):

1. builds the embedded default base model as the training pipeline's
   ``build_embedded_base_model`` node does (``conf/base/parameters_training.yml``'s
   ``base_model.embedded``: the served model's size), pre-trained for ``--pretrain-epochs``
   (1: the weights' quality does not change what a request costs), or takes
   ``--model-dir``;
2. phase "under": starts ``python -m so8t_kedro.serve --http`` on 127.0.0.1 with a
   per-client limit no client can reach (``--under-rate``) and drives it from ``--clients``
   concurrent clients for ``--seconds``, each client on its own loopback address
   (127.0.0.10, .11, ...: the rate limit is per client address) with one keep-alive
   connection, sending seed requests back to back (after a 429, waiting its
   ``Retry-After``). Must see no error and no 429;
3. phase "over": the same with a limit every client exceeds (``--over-rate`` /
   ``--over-burst``): each client must be granted what its token bucket allows
   (``burst + rate × its time``, within one request) and refused the rest with 429 and a
   ``Retry-After``;
4. after each phase, checks the audit log: one line per request sent, with its id and
   status.

Prints requests/s, p50/p95/p99 latency of the answered requests (client side), errors and
429s per phase; exits non-zero when a check fails.

    python benchmarks/serve_load.py                       # 8 clients, 2 x 20 s
    python benchmarks/serve_load.py --clients 16 --seconds 30 --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

import numpy as np
import pandas as pd
from seed_samples import build_embedded

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SEED = PROJECT_ROOT / "data/01_raw/so8t_seed_dataset.jsonl"
HOST = "127.0.0.1"
MAX_CLIENTS = 64
MAX_SECONDS = 300


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="a saved Phi-3 directory; default: build the embedded model")
    parser.add_argument("--pretrain-epochs", type=int, default=1)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--under-rate", type=float, default=1000.0,
                        help="requests/s per client in the 'under' phase (unreachable)")
    parser.add_argument("--over-rate", type=float, default=0.5)
    parser.add_argument("--over-burst", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=None, help="default: a temp dir")
    args = parser.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"1-{MAX_CLIENTS} clients and 0-{MAX_SECONDS} s per phase")
    return args


@dataclass
class ClientLog:
    """What one client sent and got back."""

    address: str
    sent: list[tuple[float, float, int, str | None, bool]] = field(default_factory=list)
    # (start s, latency s, status, X-Request-Id, Retry-After present)
    failures: list[str] = field(default_factory=list)  # transport errors


def start_server(model_dir: Path, audit: Path, rate: float, burst: int,
                 max_new_tokens: int) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "so8t_kedro.serve", "--model-dir", str(model_dir), "--http",
         "--host", HOST, "--port", "0", "--device", "cpu", "--max-new-tokens",
         str(max_new_tokens), "--rate", str(rate), "--burst", str(burst), "--audit-log",
         str(audit), "--conf-source", str(PROJECT_ROOT / "conf")],
        stderr=subprocess.PIPE, text=True, env={k: v for k, v in os.environ.items()
                                                if k != "SO8T_THINK_API_KEY"})
    for line in process.stderr:
        if line.startswith("serving /think on http://"):
            port = int(line.rsplit(":", 1)[1])
            # Keep draining the server's log so that it never blocks on a full pipe.
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, port
    raise RuntimeError(f"the server did not start (exit code {process.wait()})")


def run_client(log: ClientLog, port: int, requests: list[dict], until: float) -> None:
    rng = random.Random(log.address)
    connection = None
    while time.monotonic() < until:
        body = json.dumps(rng.choice(requests), ensure_ascii=False).encode("utf-8")
        began = time.monotonic()
        try:
            if connection is None:
                connection = http.client.HTTPConnection(HOST, port, timeout=120,
                                                        source_address=(log.address, 0))
            connection.request("POST", "/think", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            retry_after = response.getheader("Retry-After")
            log.sent.append((began, time.monotonic() - began, response.status,
                             response.getheader("X-Request-Id"), retry_after is not None))
            if response.status == 429 and retry_after:  # a polite client waits as told
                time.sleep(max(0.0, min(float(retry_after), until - time.monotonic())))
        except (OSError, http.client.HTTPException) as error:
            log.failures.append(type(error).__name__)
            if connection is not None:
                connection.close()
            connection = None


def run_phase(name: str, model_dir: Path, out: Path, args, rate: float, burst: int,
              requests: list[dict]) -> tuple[list[ClientLog], float, Path]:
    audit = out / f"audit_{name}.jsonl"
    process, port = start_server(model_dir, audit, rate, burst, args.max_new_tokens)
    try:
        logs = [ClientLog(f"127.0.0.{10 + i}") for i in range(args.clients)]
        began = time.monotonic()
        until = began + args.seconds
        threads = [threading.Thread(target=run_client, args=(log, port, requests, until))
                   for log in logs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - began
    finally:
        process.terminate()
        process.wait(timeout=60)
    return logs, elapsed, audit


def report(name: str, logs: list[ClientLog], elapsed: float, audit: Path, rate: float,
           burst: int, over: bool) -> list[str]:
    """Print the phase's figures; return the failed checks."""
    sent = [entry for log in logs for entry in log.sent]
    statuses = [status for _, _, status, _, _ in sent]
    answered = [latency * 1e3 for _, latency, status, _, _ in sent if status == 200]
    refused = statuses.count(429)
    errors = len(statuses) - statuses.count(200) - refused + sum(len(log.failures)
                                                                 for log in logs)
    p50, p95, p99 = np.percentile(answered, [50, 95, 99]) if answered else (np.nan,) * 3
    print(f"{name:<6} {len(sent):>8} {statuses.count(200):>6} {refused:>6} {errors:>6} "
          f"{statuses.count(200) / elapsed:>8.2f} {len(sent) / elapsed:>8.2f} "
          f"{p50:>8.1f} {p95:>8.1f} {p99:>8.1f}")

    failed = []
    if errors:
        failed.append(f"{name}: {errors} errors")
    if not over and refused:
        failed.append(f"{name}: {refused} 429s under the limit")
    if over:
        for log in logs:
            granted = [entry for entry in log.sent if entry[2] == 200]
            span = log.sent[-1][0] - log.sent[0][0] if log.sent else 0.0
            allowed = burst + rate * span
            # Whole requests against a continuous refill: one either way.
            if not allowed - 1 <= len(granted) <= allowed + 1:
                failed.append(f"{name}: client {log.address} granted {len(granted)}, its "
                              f"bucket allows {allowed:.1f}")
            if not all(retry for _, _, status, _, retry in log.sent if status == 429):
                failed.append(f"{name}: a 429 without Retry-After")
        if not refused:
            failed.append(f"{name}: no 429 over the limit")
    lines = [json.loads(line) for line in audit.read_text("utf-8").splitlines()]
    audited = {line["request_id"]: line["status"] for line in lines}
    replied = {request_id: status for _, _, status, request_id, _ in sent}
    if len(lines) != len(sent) or audited != replied:
        failed.append(f"{name}: {len(lines)} audit lines for {len(sent)} requests "
                      f"({len(set(audited) ^ set(replied))} ids differ)")
    return failed


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory() as temp:
        out = args.out_dir or Path(temp)
        out.mkdir(parents=True, exist_ok=True)
        rows = pd.read_json(SEED, lines=True, dtype=False)
        model_dir = args.model_dir or build_embedded(rows, out / "embedded_base_model",
                                                     args.pretrain_epochs)
        requests = [{"text": text, "language": language}
                    for text, language in zip(rows["text"], rows["language"])]
        print(f"model: {model_dir}  ({platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs); {args.clients} clients x {args.seconds:g} s per phase, "
              f"max_new_tokens {args.max_new_tokens}")
        print(f"\n{'phase':<6} {'requests':>8} {'200':>6} {'429':>6} {'errors':>6} "
              f"{'ok/s':>8} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
        failed = []
        for name, rate, burst, over in (
                ("under", args.under_rate, int(args.under_rate), False),
                ("over", args.over_rate, args.over_burst, True)):
            logs, elapsed, audit = run_phase(name, model_dir, out, args, rate, burst, requests)
            failed += report(name, logs, elapsed, audit, rate, burst, over)
        print(f"\nlimits: under {args.under_rate:g}/s per client (unreachable); over "
              f"{args.over_rate:g}/s, burst {args.over_burst} per client. Latency: answered "
              "requests, client side. Audit log: one line per request, ids and statuses "
              "match" + ("" if not any("audit" in f for f in failed) else " FAILED"))
    for failure in failed:
        print(f"CHECK FAILED: {failure}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
