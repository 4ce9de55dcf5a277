"""``python -m so8t_kedro.serve`` as a subprocess on the tiny model: one request, --http
(uvicorn), and the refusal to serve off loopback without an API key."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys

import pytest

from so8t_kedro.labels import LABELS
from so8t_kedro.serve.__main__ import main
from so8t_kedro.serve.config import API_KEY_ENV

COMMAND = [sys.executable, "-m", "so8t_kedro.serve"]


@pytest.fixture
def cli_env(monkeypatch):
    """No API key from the developer's shell."""
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    return {key: value for key, value in os.environ.items() if key != API_KEY_ENV}


@pytest.mark.slow
def test_one_request_prints_the_json_answer(tiny_base_dir, tmp_path, project_root, cli_env):
    audit = tmp_path / "audit.jsonl"
    text = "肉じゃがの作り方を教えてください。"
    result = subprocess.run(
        [*COMMAND, "--model-dir", str(tiny_base_dir), "--max-new-tokens", "8", "--device",
         "cpu", "--conf-source", str(project_root / "conf"), "--audit-log", str(audit), text],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False, env=cli_env)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert set(answer) == {"request_id", "final", "decision", "probabilities", "format_ok",
                           "fallback", "latency_ms"}
    assert list(answer["probabilities"]) == list(LABELS)
    assert answer["decision"] == max(answer["probabilities"], key=answer["probabilities"].get)
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0)
    (line,) = [json.loads(line) for line in audit.read_text("utf-8").splitlines()]
    assert line["request_id"] == answer["request_id"] and line["client"] == "cli"
    assert line["decision"] == answer["decision"]
    assert text not in audit.read_text("utf-8")


@pytest.mark.slow
def test_http_mode_serves_think(tiny_base_dir, tmp_path, project_root, cli_env):
    audit = tmp_path / "audit.jsonl"
    process = subprocess.Popen(
        [*COMMAND, "--model-dir", str(tiny_base_dir), "--http", "--port", "0",
         "--max-new-tokens", "8", "--device", "cpu", "--conf-source",
         str(project_root / "conf"), "--audit-log", str(audit)],
        stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=cli_env)
    try:
        for line in process.stderr:  # wait for the model to load and the port to open
            if line.startswith("serving /think on http://"):
                host, port = line.rsplit("/", 1)[1].strip().rsplit(":", 1)
                break
        else:
            pytest.fail(f"the server did not start (exit code {process.wait()})")
        assert host == "127.0.0.1"
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        connection.request("POST", "/think", json.dumps({"text": "こんにちは"}),
                           {"Content-Type": "application/json"})
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


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.7", "::", "example.org"])
def test_refuses_a_non_loopback_bind_without_an_api_key(host, tmp_path, project_root,
                                                         capsys, cli_env, monkeypatch):
    # The model directory does not exist: the refusal comes before any model loads.
    code = main(["--model-dir", str(tmp_path / "missing"), "--http", "--host", host,
                 "--conf-source", str(project_root / "conf")])
    assert code == 2
    error = capsys.readouterr().err
    assert f"refusing to serve on {host} without an API key" in error
    assert API_KEY_ENV in error


def test_refuses_a_short_api_key(tmp_path, project_root, capsys, cli_env, monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "short")
    code = main(["--model-dir", str(tmp_path / "missing"), "--http", "--host", "0.0.0.0",
                 "--conf-source", str(project_root / "conf")])
    assert code == 2
    assert "the API key has 5 characters; at least 16 are required" in capsys.readouterr().err


def test_api_key_from_credentials_or_environment(tmp_path, project_root, cli_env, monkeypatch):
    import shutil

    from so8t_kedro.serve.config import load_serve_conf

    conf = tmp_path / "conf"
    shutil.copytree(project_root / "conf" / "base", conf / "base")
    (conf / "local").mkdir()
    assert load_serve_conf(conf)[1] is None
    (conf / "local" / "credentials.yml").write_text(
        "think_api:\n  api_key: from-credentials-0123456789\n")
    assert load_serve_conf(conf)[1] == "from-credentials-0123456789"
    monkeypatch.setenv(API_KEY_ENV, "from-environment-0123456789")
    assert load_serve_conf(conf)[1] == "from-environment-0123456789"


def test_serve_conf_reads_a_local_override_and_only_the_serving_files(tmp_path, project_root):
    import shutil

    from so8t_kedro.serve.config import load_serve_conf

    conf = tmp_path / "conf"
    shutil.copytree(project_root / "conf" / "base", conf / "base")
    (conf / "local").mkdir()
    (conf / "local" / "parameters_serve.yml").write_text(
        "serve:\n  reply_policy:\n    on_decision_disagreement: show\n")
    # A broken file of another pipeline is not read by the server.
    (conf / "local" / "parameters_training.yml").write_text("training: [unclosed\n")
    policy = load_serve_conf(conf)[0]
    base = load_serve_conf(conf, "base")[0]
    assert policy.on_decision_disagreement == "show"
    assert base.on_decision_disagreement == "withhold"
    # The soft merge keeps the base replies and switches the override does not name.
    assert policy.replies == base.replies and policy.replies["DENY"]["en"].startswith("Sorry")
    assert policy.escalation_includes_model_answer is True
