"""The audit log: whole JSON lines from many threads, UTC times, private file mode."""

from __future__ import annotations

import json
import stat
import threading
from datetime import datetime, timedelta

from so8t_kedro.serve.audit import AuditLog


def test_threads_append_whole_lines(tmp_path):
    log = AuditLog(tmp_path / "nested" / "audit.jsonl")
    padding = "x" * 3000  # long lines stay whole too

    def writer(worker: int) -> None:
        for i in range(100):
            log.append({"worker": worker, "i": i, "padding": padding})

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = [json.loads(line) for line in log.path.read_text("utf-8").splitlines()]
    assert len(lines) == 800
    assert sorted((line["worker"], line["i"]) for line in lines) == [
        (w, i) for w in range(8) for i in range(100)]
    assert all(datetime.fromisoformat(line["time"]).utcoffset() == timedelta(0)
               for line in lines)
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600


def test_a_removed_log_is_started_again(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append({"n": 1})
    log.path.unlink()
    log.append({"n": 2})
    assert [json.loads(line)["n"] for line in log.path.read_text().splitlines()] == [2]
