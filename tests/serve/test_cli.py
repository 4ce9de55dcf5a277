"""``python -m so8t_kedro.serve`` as a subprocess on the tiny model: one request, and --http."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys

import pytest

from so8t_kedro.labels import LABELS
from so8t_kedro.serve.__main__ import main

COMMAND = [sys.executable, "-m", "so8t_kedro.serve"]


@pytest.mark.slow
def test_one_request_prints_the_json_answer(tiny_base_dir, tmp_path):
    audit = tmp_path / "audit.jsonl"
    text = "肉じゃがの作り方を教えてください。"
    result = subprocess.run(
        [*COMMAND, "--model-dir", str(tiny_base_dir), "--max-new-tokens", "8", "--device",
         "cpu", "--audit-log", str(audit), text],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert set(answer) == {"request_id", "final", "decision", "probabilities", "format_ok",
                           "fallback", "latency_ms"}
    assert list(answer["probabilities"]) == list(LABELS)
    assert answer["decision"] == max(answer["probabilities"], key=answer["probabilities"].get)
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0)
    (line,) = [json.loads(line) for line in audit.read_text("utf-8").splitlines()]
    assert line["request_id"] == answer["request_id"] and line["client"] == "cli"
    assert text not in audit.read_text("utf-8")


@pytest.mark.slow
def test_http_mode_serves_think(tiny_base_dir, tmp_path):
    audit = tmp_path / "audit.jsonl"
    process = subprocess.Popen(
        [*COMMAND, "--model-dir", str(tiny_base_dir), "--http", "--port", "0",
         "--max-new-tokens", "8", "--device", "cpu", "--audit-log", str(audit)],
        stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        for line in process.stderr:  # wait for the model to load and the port to open
            if line.startswith("serving POST /think on http://"):
                host, port = line.rsplit("/", 1)[1].strip().rsplit(":", 1)
                break
        else:
            pytest.fail(f"the server did not start (exit code {process.wait()})")
        assert host == "127.0.0.1"
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        connection.request("POST", "/think", json.dumps({"text": "こんにちは"}))
        response = connection.getresponse()
        assert response.status == 200
        body = json.loads(response.read())
        assert body["decision"] == max(body["probabilities"], key=body["probabilities"].get)
        connection.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stderr.close()
    assert json.loads(audit.read_text("utf-8").splitlines()[0])["status"] == 200


@pytest.mark.parametrize("arguments", [[], ["--http", "some text"]])
def test_needs_exactly_one_of_text_and_http(arguments, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-dir", str(tmp_path), *arguments])
    assert exit_info.value.code == 2
    assert "either one request text or --http" in capsys.readouterr().err
