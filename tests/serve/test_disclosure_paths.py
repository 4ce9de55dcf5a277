"""No byte of a reply's thinking reaches the /think response body, the CLI output or the
audit log, however it is wrapped (the rules themselves: tests/think/test_disclosure.py)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from so8t_kedro.serve import ThinkService
from so8t_kedro.serve import __main__ as cli
from so8t_kedro.think import LANGUAGES
from tests.helpers.thinking_replies import replies_with_thinking

END_TO_END_EXAMPLES = 300  # one example per strategy draw; the count the README reports


@pytest.fixture
def answer_paths(make_app, scripted, policy, tmp_path, monkeypatch):
    """One ScriptedBackend behind the app (TestClient) and the CLI; the test sets its reply."""
    backend = scripted()
    service = ThinkService(backend)
    served = make_app(service)
    monkeypatch.setattr(cli, "load_service", lambda *args, **kwargs: service)
    return backend, TestClient(served.app), served.audit.path, tmp_path / "cli-audit.jsonl"


@settings(max_examples=END_TO_END_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=replies_with_thinking(), language=st.sampled_from(LANGUAGES))
def test_property_thinking_never_reaches_body_cli_or_audit(case, language, answer_paths,
                                                           project_root):
    secret, label, reply = case
    backend, client, audit_path, cli_audit = answer_paths
    backend.reply = reply
    # The scores agree with the generated decision line: no disagreement hides the answer.
    backend.scores = [0.0, -3.0, -4.0, -5.0] if label == "ALLOW" else [-3.0, 0.0, -4.0, -5.0]
    response = client.post("/think", json={"text": "質問です", "language": language})
    assert response.status_code == 200
    assert secret not in response.text
    assert json.loads(response.text)["decision"] == label

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert cli.main(["--model-dir", "unused", "--conf-source",
                         str(project_root / "conf"), "--env", "base", "--audit-log",
                         str(cli_audit), "--language", language, "質問です"]) == 0
    assert secret not in stdout.getvalue()
    assert json.loads(stdout.getvalue())["final"] == response.json()["final"]
    for log in (audit_path, cli_audit):
        assert secret not in log.read_text("utf-8")
