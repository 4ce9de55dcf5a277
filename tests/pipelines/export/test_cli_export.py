"""`kedro run --pipelines=export` from a shell, on the project's own catalog and parameters."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.kedro_cli import kedro, ok

VERSION = "2026-01-01T00.00.00.000Z"


def seed_versioned(target: Path, source: Path | None = None) -> Path:
    """Kedro's versioned layout ``<filepath>/<version>/<basename>``, as a training run leaves it."""
    path = target / VERSION / target.name
    if source is not None:
        shutil.copytree(source, path)
    return path


@pytest.mark.slow
def test_kedro_run_export_pipeline(kedro_project: Path, tiny_base_dir, tiny_adapter_dir,
                                   sft_samples, monkeypatch):
    data = kedro_project / "data"
    seed_versioned(data / "06_models/embedded_base_model", tiny_base_dir)
    seed_versioned(data / "06_models/so8t_adapter", tiny_adapter_dir)
    sft = seed_versioned(data / "05_model_input/thinking_sft/thinking_sft_dataset.jsonl")
    sft.parent.mkdir(parents=True)
    sft_samples.to_json(sft, orient="records", lines=True, force_ascii=False)
    # An Ollama on this machine must not get a test model registered.
    monkeypatch.setenv("PATH", os.pathsep.join(
        d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "ollama").exists()))

    # sft_samples has train and val splits only; 8 new tokens keep the generation short.
    ok(kedro(kedro_project, "run", "--pipelines=export",
             "--params=export.verify.split=val,export.japanese_performance.max_new_tokens=8"))

    folder = data / "07_model_output/gguf_models/borea_phi35_so8t_thinking"
    assert sorted(p.name for p in folder.iterdir()) == [
        "Modelfile", *(f"borea_phi35_so8t_thinking-{t}.gguf" for t in ("F16", "Q4_K_M", "Q8_0"))]
    [baked] = (data / "06_models/borea_phi35_so8t_thinking/baked_model").glob("*/baked_model")
    assert (baked / "tokenizer.model").is_file() and (baked / "model.safetensors").is_file()

    def report(name: str) -> dict:
        [path] = (data / "08_reporting/export").glob(f"{name}.json/*/{name}.json")
        return json.loads(path.read_text(encoding="utf-8"))

    assert report("bake_verification")["max_abs_logit_diff"] < 1e-3
    f16 = report("gguf_verification")["files"]["F16"]
    assert f16["max_abs_logit_diff"] < 5e-2 and f16["top1_agreement"] > 0.99
    assert report("ollama_create") == {
        "command": f"ollama create borea_phi35_so8t_thinking -f {folder.resolve() / 'Modelfile'}",
        "ran": False, "skipped": "ollama not on PATH"}
    [page] = (data / "08_reporting/export").glob("export_report.html/*/export_report.html")
    assert "<h2>GGUF files</h2>" in page.read_text(encoding="utf-8")
