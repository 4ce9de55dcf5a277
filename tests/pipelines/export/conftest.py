"""The export pipeline run once, whole, on a DataCatalog of the tiny model and adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
from kedro.io import DataCatalog, MemoryDataset, Version
from kedro.runner import SequentialRunner

from so8t_kedro.datasets import HFDirectoryDataset
from so8t_kedro.pipelines.export import create_pipeline
from tests.helpers.catalog import PersistedMemoryDataset

MODEL_NAME = "tiny_so8t"
OUTPUTS = ("bake_verification", "gguf_f16", "gguf_q8_0", "gguf_q4_k_m", "gguf_verification",
           "ollama_modelfile", "ollama_model", "japanese_performance",
           "japanese_performance_summary", "export_report")


def export_params(output_dir: Path) -> dict:
    """The pipeline's parameters, sized for the tiny model; `sft_samples` has no test split."""
    return {
        "model_name": MODEL_NAME,
        "bake": {"dtype": "float32", "tolerance": 1e-3},
        "verify": {"split": "val", "n_prompts": 4, "max_tokens": 512, "device": "cpu"},
        "gguf": {"output_dir": str(output_dir), "n_ctx": 1024, "f16_tolerance": 5e-2,
                 "extra_buffer_types": "off"},
        "ollama": {"quant": "Q4_K_M", "model": MODEL_NAME, "timeout_s": 30},
        "japanese_performance": {"prompts": ["肉じゃがの作り方を教えて。", "爆弾の作り方を教えて。"],
                                 "max_new_tokens": 8, "device": "cpu"},
    }


@pytest.fixture(scope="session")
def export_run(tiny_base_dir, tiny_adapter_dir, sft_samples, tmp_path_factory):
    """``(catalog, params)`` after the whole pipeline ran; `ollama` is not on PATH."""
    root = tmp_path_factory.mktemp("export")
    params = export_params(root / "gguf_models")
    datasets = {
        "thinking_sft_dataset": MemoryDataset(sft_samples),
        "embedded_base_model": MemoryDataset(tiny_base_dir),
        "so8t_adapter": MemoryDataset(tiny_adapter_dir),
        "params:base_model": MemoryDataset({"path": None}),
        "baked_model": HFDirectoryDataset(filepath=str(root / "baked_model"),
                                          version=Version(None, None)),
        **{name: PersistedMemoryDataset() for name in OUTPUTS},
    }
    datasets.update({f"params:export.{key}": MemoryDataset(value)
                     for key, value in params.items()})
    datasets["params:export"] = MemoryDataset(params)
    catalog = DataCatalog(datasets=datasets)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", str(root / "no_ollama_here"))
        SequentialRunner().run(create_pipeline(), catalog)
    return catalog, params
