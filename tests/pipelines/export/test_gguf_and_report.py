"""The GGUF nodes, their llama.cpp check, the Japanese performance nodes and the report,
from the whole pipeline's run on the tiny model."""

from __future__ import annotations

import hashlib
import html
from pathlib import Path

import pytest

from so8t_kedro.export.gguf import GGUF_OUTTYPES
from so8t_kedro.pipelines.export import nodes
from so8t_kedro.pipelines.export.nodes import ExportVerificationError, verify_gguf_files


def manifests(catalog) -> dict[str, dict]:
    return {outtype: catalog.load(f"gguf_{outtype.lower()}") for outtype in GGUF_OUTTYPES}


def test_three_gguf_files_in_one_folder_each_quant_smaller(export_run):
    catalog, params = export_run
    files = manifests(catalog)
    name = params["model_name"]
    folder = Path(params["gguf"]["output_dir"]) / name
    for outtype, manifest in files.items():
        path = Path(manifest["path"])
        assert path == folder / f"{name}-{outtype}.gguf"
        assert manifest["file_size_bytes"] == path.stat().st_size
        assert manifest["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert (manifest["architecture"], manifest["file_type"]) == ("phi3", f"MOSTLY_{outtype}")
        assert manifest["bake_max_abs_logit_diff"] == catalog.load(
            "bake_verification")["max_abs_logit_diff"]
    sizes = {outtype: m["file_size_bytes"] for outtype, m in files.items()}
    assert sizes["Q4_K_M"] < sizes["Q8_0"] < sizes["F16"]
    # F16 and Q8_0 from the baked weights; Q4_K_M from the F16 file, as llama.cpp does it
    assert files["F16"]["source"] == files["Q8_0"]["source"] == str(catalog.load("baked_model"))
    assert files["Q4_K_M"]["source"] == files["F16"]["path"]
    # the Modelfile beside them, and no partial files left behind
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["Modelfile", *(f"{name}-{t}.gguf" for t in GGUF_OUTTYPES)])


def test_gguf_files_reproduce_the_baked_model_in_llama_cpp(export_run):
    catalog, params = export_run
    report = catalog.load("gguf_verification")
    checks = report["files"]
    assert sorted(checks) == sorted(GGUF_OUTTYPES)
    n_tokens = catalog.load("bake_verification")["n_tokens"]  # the same held-out texts
    for check in checks.values():
        assert check["vocab_match"] and check["tokenization_match"]
        assert check["n_positions"] == n_tokens
    # F16: rounding of the weights only (7e-4 here, 9e-3 on the trained embedded model).
    # Top-1 may flip where two logits of this barely trained model nearly tie (0.9995 on 8
    # val texts; llama.cpp's sums also vary with the CPU's SIMD width).
    assert checks["F16"]["max_abs_logit_diff"] < params["gguf"]["f16_tolerance"]
    assert checks["F16"]["top1_agreement"] > 0.99
    # each coarser type moves the logits more
    means = [checks[t]["mean_abs_logit_diff"] for t in ("F16", "Q8_0", "Q4_K_M")]
    assert means == sorted(means) and means[0] > 0


def test_verify_gguf_files_raises_above_the_f16_tolerance(export_run):
    catalog, params = export_run
    measured = catalog.load("gguf_verification")["files"]["F16"]["max_abs_logit_diff"]
    with pytest.raises(ExportVerificationError, match=r"F16: max \|Δlogit\| .* > export.gguf"):
        verify_gguf_files(*manifests(catalog).values(), catalog.load("thinking_sft_dataset"),
                          {**params, "gguf": {**params["gguf"], "f16_tolerance": measured / 2}})


def test_verify_gguf_files_names_each_vocabulary_and_tokenisation_failure(export_run,
                                                                          monkeypatch):
    """The measured checks with a vocabulary broken in Q8_0 and a tokenisation in Q4_K_M:
    the run fails, naming both, though every logit is within tolerance."""
    catalog, params = export_run
    checks = catalog.load("gguf_verification")["files"]
    checks["Q8_0"].update(vocab_match=False, vocab_mismatches=3)
    checks["Q4_K_M"].update(tokenization_match=False,
                            tokenization_mismatches=[{"prompt": 0, "hf": [1], "gguf": [2]}])
    by_path = {m["path"]: checks[outtype] for outtype, m in manifests(catalog).items()}
    monkeypatch.setattr(nodes, "verify_ggufs",
                        lambda paths, *args, **kwargs: [by_path[path] for path in paths])
    with pytest.raises(ExportVerificationError) as failure:
        verify_gguf_files(*manifests(catalog).values(), catalog.load("thinking_sft_dataset"),
                          params)
    message = str(failure.value)
    assert "Q8_0: vocabulary differs (3 pieces" in message
    assert "Q4_K_M: llama.cpp tokenises 1 texts differently" in message
    assert "F16" not in message


def test_verify_gguf_files_needs_f16_and_q8_0_of_one_baked_model(export_run):
    catalog, params = export_run
    files = manifests(catalog)
    files["Q8_0"] = {**files["Q8_0"], "source": "/elsewhere/baked_model"}
    with pytest.raises(ExportVerificationError, match="different baked models"):
        verify_gguf_files(*files.values(), catalog.load("thinking_sft_dataset"), params)


def test_japanese_performance_compares_original_and_baked(export_run):
    catalog, params = export_run
    table = catalog.load("japanese_performance")
    prompts = params["japanese_performance"]["prompts"]
    assert table["model"].tolist() == ["original"] * len(prompts) + ["so8t_baked"] * len(prompts)
    assert table["prompt"].tolist() == prompts * 2
    assert (table["new_tokens"] <= params["japanese_performance"]["max_new_tokens"]).all()
    summary = catalog.load("japanese_performance_summary")
    assert list(summary) == ["original", "so8t_baked"]
    assert [s["n_prompts"] for s in summary.values()] == [len(prompts)] * 2


def test_export_report_gathers_every_check(export_run):
    catalog, _ = export_run
    page = catalog.load("export_report")
    modelfile = catalog.load("ollama_modelfile")
    assert catalog.load("ollama_model") == {**modelfile, "ran": False,
                                            "skipped": "ollama not on PATH"}
    verification = catalog.load("gguf_verification")
    assert verification["manifests"] == manifests(catalog)  # what it checked, persisted
    for heading in ("Baked model", "GGUF files", "Ollama",
                    "Japanese performance: original vs baked"):
        assert f"<h2>{html.escape(heading)}</h2>" in page
    assert html.escape(modelfile["command"]) in page
    assert html.escape(modelfile["content"]) in page
    assert "skipped (ollama not on PATH)" in page
    bake = catalog.load("bake_verification")
    assert f"{bake['max_abs_logit_diff']:.3e}" in page
    for outtype, manifest in manifests(catalog).items():
        assert Path(manifest["path"]).name in page and manifest["sha256"][:16] in page
        check = catalog.load("gguf_verification")["files"][outtype]
        assert f"{check['max_abs_logit_diff']:.3e}" in page
    for prompt in catalog.load("japanese_performance")["prompt"]:
        assert html.escape(prompt) in page
