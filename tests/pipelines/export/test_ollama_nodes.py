"""The Ollama nodes: the Modelfile's content, and `ollama create` run or skipped."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from so8t_kedro import think as tf
from so8t_kedro.pipelines.export.nodes import create_ollama_model, write_ollama_modelfile

OLLAMA = {"quant": "Q4_K_M", "model": "borea_phi35_so8t_thinking", "timeout_s": 30}


@pytest.fixture
def gguf_manifests(tmp_path) -> list[dict]:
    folder = tmp_path / "gguf_models/m"
    folder.mkdir(parents=True)
    manifests = []
    for outtype in ("F16", "Q8_0", "Q4_K_M"):
        path = folder / f"m-{outtype}.gguf"
        path.write_bytes(b"GGUF")
        manifests.append({"outtype": outtype, "path": str(path)})
    return manifests


def go_template_turn(template: str, system: str, prompt: str) -> str:
    """What Ollama sends the model for one turn with a system prompt: both `if`s true, the
    text up to ``{{ .Response }}`` (generation continues from there)."""
    head = template.split("{{ .Response }}")[0]
    for marker in ("{{ if .System }}", "{{ if .Prompt }}", "{{ end }}"):
        head = head.replace(marker, "")
    return head.replace("{{ .System }}", system).replace("{{ .Prompt }}", prompt)


def test_modelfile_sits_beside_its_gguf_with_phi35_layout(gguf_manifests):
    written = write_ollama_modelfile(*gguf_manifests, OLLAMA)
    path = Path(written["path"])
    assert path.name == "Modelfile" and path.parent == Path(gguf_manifests[2]["path"]).parent
    content = path.read_text(encoding="utf-8")
    assert content == written["content"]

    [source] = re.findall(r"^FROM (.+)$", content, flags=re.MULTILINE)
    assert source == "./m-Q4_K_M.gguf" and (path.parent / source).is_file()
    assert re.findall(r'^PARAMETER stop "(.+)"$', content, flags=re.MULTILINE) == [
        "<|end|>", "<|assistant|>", "<|endoftext|>"]
    [system] = re.findall(r'^SYSTEM """(.*?)"""$', content, flags=re.MULTILINE | re.DOTALL)
    assert system == tf.SYSTEM_PROMPT
    [template] = re.findall(r'^TEMPLATE """(.*?)"""$', content, flags=re.MULTILINE | re.DOTALL)
    # byte for byte the prompt the model was trained on
    user = "東京の天気を教えて"
    assert go_template_turn(template, system, user) == tf.render_prompt(user)
    assert template.endswith("{{ .Response }}<|end|>\n")

    assert written["command"] == shlex.join(
        ["ollama", "create", OLLAMA["model"], "-f", str(path)])


def test_modelfile_uses_the_quant_parameter(gguf_manifests):
    written = write_ollama_modelfile(*gguf_manifests, {**OLLAMA, "quant": "Q8_0"})
    assert written["content"].startswith("FROM ./m-Q8_0.gguf\n")
    with pytest.raises(ValueError, match="must be one of"):
        write_ollama_modelfile(*gguf_manifests, {**OLLAMA, "quant": "Q2_K"})


def fake_ollama(bin_dir: Path, exit_code: int) -> Path:
    """An `ollama` on PATH that records its arguments and working directory."""
    bin_dir.mkdir()
    log = bin_dir / "calls.txt"
    script = bin_dir / "ollama"
    message = "echo success" if exit_code == 0 else "echo 'Error: no such file' >&2"
    script.write_text(f'#!/bin/sh\necho "$PWD $*" >> {shlex.quote(str(log))}\n'
                      f"{message}\nexit {exit_code}\n")
    script.chmod(0o755)
    return log


def test_create_ollama_model_runs_ollama_create(gguf_manifests, tmp_path, monkeypatch):
    log = fake_ollama(tmp_path / "bin", exit_code=0)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    modelfile = write_ollama_modelfile(*gguf_manifests, OLLAMA)
    result = create_ollama_model(modelfile, OLLAMA)
    assert result["ran"] is True and result["skipped"] is None
    assert "success" in result["output"]
    folder = Path(modelfile["path"]).parent
    assert log.read_text().split() == [str(folder), "create", OLLAMA["model"], "-f",
                                       modelfile["path"]]


def test_create_ollama_model_fails_loudly_when_ollama_fails(gguf_manifests, tmp_path,
                                                            monkeypatch):
    fake_ollama(tmp_path / "bin", exit_code=1)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(RuntimeError, match="exit status 1: Error: no such file"):
        create_ollama_model(write_ollama_modelfile(*gguf_manifests, OLLAMA), OLLAMA)


def test_create_ollama_model_is_skipped_without_ollama(gguf_manifests, tmp_path, monkeypatch,
                                                       caplog):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    modelfile = write_ollama_modelfile(*gguf_manifests, OLLAMA)
    result = create_ollama_model(modelfile, OLLAMA)
    assert result == {**modelfile, "ran": False, "skipped": "ollama not on PATH"}
    assert "skipped" in caplog.text and modelfile["command"] in caplog.text
