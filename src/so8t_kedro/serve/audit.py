"""The /think audit log: one JSON line per request, rejected ones included.

A line holds who asked, when, what was decided and what it cost, and SHA-256 hashes of the
request and of the thinking, so that a stored generation can be matched to its line
without the log itself holding any request or thinking text (the seeds' rule: the
thinking is never disclosed). Callers pass hashes and counts only.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def utc_now() -> str:
    """The current UTC time, ISO 8601 with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class AuditLog:
    """Appends JSON lines to ``path`` (created with mode 0600: it holds client addresses).

    Each line is written with one ``os.write`` on an ``O_APPEND`` descriptor, under a lock:
    lines from the threaded server never interleave, and the file is opened per line so a
    log rotated or removed while the server runs is simply started again.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def append(self, record: Mapping[str, Any]) -> None:
        line = json.dumps({"time": utc_now(), **record}, ensure_ascii=False,
                          separators=(",", ":")) + "\n"
        data = line.encode("utf-8")
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
