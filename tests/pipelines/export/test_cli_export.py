"""`kedro run --pipelines=export` from a shell, on the project's own catalog and parameters."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from transformers import Phi3ForCausalLM

from tests.helpers.kedro_cli import kedro, ok
from tests.helpers.tolerances import (
    forward_bound,
    max_abs_logit,
    rounded_operands_bound,
    unit_roundoff,
)

VERSION = "2026-01-01T00.00.00.000Z"


def seed_versioned(target: Path, source: Path | None = None) -> Path:
    """Kedro's versioned layout ``<filepath>/<version>/<basename>``, as a training run leaves it."""
    path = target / VERSION / target.name
    if source is not None:
        shutil.copytree(source, path)
    return path


# sft_samples has train and val splits only; 8 new tokens keep the generation short.
EXPORT_RUN = ("run", "--pipelines=export",
              "--params=export.verify.split=val,export.japanese_performance.max_new_tokens=8")
GGUF_FOLDER = "07_model_output/gguf_models/borea_phi35_so8t_thinking"


@pytest.fixture
def export_project(kedro_project: Path, tiny_base_dir, tiny_adapter_dir, sft_samples,
                   monkeypatch) -> Path:
    """The project with what a training run leaves for the export pipeline."""
    data = kedro_project / "data"
    seed_versioned(data / "06_models/embedded_base_model", tiny_base_dir)
    seed_versioned(data / "06_models/so8t_adapter", tiny_adapter_dir)
    sft = seed_versioned(data / "05_model_input/thinking_sft/thinking_sft_dataset.jsonl")
    sft.parent.mkdir(parents=True)
    sft_samples.to_json(sft, orient="records", lines=True, force_ascii=False)
    # An Ollama on this machine must not get a test model registered.
    monkeypatch.setenv("PATH", os.pathsep.join(
        d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "ollama").exists()))
    return kedro_project


@pytest.mark.slow
def test_kedro_run_export_pipeline(export_project: Path):
    data = export_project / "data"
    ok(kedro(export_project, *EXPORT_RUN))

    folder = data / GGUF_FOLDER
    assert sorted(p.name for p in folder.iterdir()) == [
        "Modelfile", *(f"borea_phi35_so8t_thinking-{t}.gguf" for t in ("F16", "Q4_K_M", "Q8_0"))]
    [baked] = (data / "06_models/borea_phi35_so8t_thinking/baked_model").glob("*/baked_model")
    assert (baked / "tokenizer.model").is_file() and (baked / "model.safetensors").is_file()

    def report(name: str) -> dict:
        [path] = (data / "08_reporting/export").glob(f"{name}.json/*/{name}.json")
        return json.loads(path.read_text(encoding="utf-8"))

    # Bounds from the dtypes and the baked model's size (tests/helpers/tolerances.py): the
    # fold regroups float32 sums; the F16 file rounds weights and activations to F16.
    model = Phi3ForCausalLM.from_pretrained(baked)
    largest_logit = max_abs_logit(model)
    assert report("bake_verification")["max_abs_logit_diff"] <= forward_bound(
        torch.float32, model.config, torch.tensor(largest_logit))
    f16 = report("gguf_verification")["files"]["F16"]
    assert f16["max_abs_logit_diff"] < rounded_operands_bound(
        unit_roundoff(torch.float16), model.config, f16["hf_max_abs_logit"])
    assert f16["top1_agreement"] > 0.99
    ollama = report("ollama_create")
    assert ollama["command"] == (f"ollama create borea_phi35_so8t_thinking -f "
                                 f"{folder.resolve() / 'Modelfile'}")
    assert (ollama["ran"], ollama["skipped"]) == (False, "ollama not on PATH")
    [page] = (data / "08_reporting/export").glob("export_report.html/*/export_report.html")
    assert "<h2>GGUF files</h2>" in page.read_text(encoding="utf-8")

    # The report again from the persisted results alone, as the README shows.
    ok(kedro(export_project, "run", "--nodes=render_export_report"))
    pages = sorted((data / "08_reporting/export").glob("export_report.html/*/export_report.html"))
    assert len(pages) == 2 and pages[1].read_text(encoding="utf-8") == page.read_text(
        encoding="utf-8")


@pytest.mark.slow
def test_a_llama_cpp_crash_fails_one_node_and_the_run_reports_it(export_project: Path,
                                                                 monkeypatch):
    """SIGILL in llama.cpp while the Q8_0 file is checked, as on a CPU whose AMX the OS does
    not enable: the node fails with the signal, file and resume command; the files written
    before it and the run summary are on disk."""
    monkeypatch.setenv("SO8T_KEDRO_NATIVE_CRASH", "eval_logits:SIGILL:Q8_0")
    result = kedro(export_project, *EXPORT_RUN)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]  # Kedro's error exit, not 132 (SIGILL)
    q8_0 = export_project / "data" / GGUF_FOLDER / "borea_phi35_so8t_thinking-Q8_0.gguf"
    assert "Node verify_gguf_files failed (NativeCrashError: llama.cpp crashed with SIGILL " \
           "(signal 4) during GGUF verification (eval_logits) of" in output
    assert q8_0.name in "".join(output.split())  # the console wraps long lines
    assert "--from-nodes=verify_gguf_files" in output
    assert sorted(p.name for p in q8_0.parent.iterdir()) == [
        f"borea_phi35_so8t_thinking-{t}.gguf" for t in ("F16", "Q4_K_M", "Q8_0")]
    [summary] = (export_project / "data/08_reporting/runs/run_summary.json").glob(
        "*/run_summary.json")
    summary = json.loads(summary.read_text(encoding="utf-8"))
    assert summary["status"] == "failure"
    assert summary["failed_node"] == "verify_gguf_files"
