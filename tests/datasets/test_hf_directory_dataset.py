from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from kedro.io import DataCatalog
from kedro.io.core import DatasetError, Version

from so8t_kedro.datasets import HFDirectoryDataset


class FakeModel:
    """Writes two files like a tiny ``save_pretrained``."""

    def __init__(self, tag: str = "a") -> None:
        self.tag = tag

    def save_pretrained(self, path: str, **kwargs) -> None:
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        config = {"model_type": "phi3", "architectures": ["Phi3ForCausalLM"], "tag": self.tag}
        (out / "config.json").write_text(json.dumps(config))
        (out / "model.safetensors").write_bytes(b"\0" * 16)


class CrashingModel:
    def save_pretrained(self, path: str, **kwargs) -> None:
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text("{}")
        raise RuntimeError("disk full halfway")


def _tag(directory: Path) -> str:
    return json.loads((directory / "config.json").read_text())["tag"]


def _save_new_version(filepath: Path, model) -> str:
    ds = HFDirectoryDataset(filepath=str(filepath), version=Version(None, None))
    ds.save(model)
    time.sleep(0.005)  # distinct millisecond timestamps
    return ds.resolve_save_version()


def test_versioned_save_load_latest_and_pinned(tmp_path):
    filepath = tmp_path / "06_models" / "adapter"
    first = _save_new_version(filepath, FakeModel("first"))
    second = _save_new_version(filepath, FakeModel("second"))
    assert first != second

    latest = HFDirectoryDataset(filepath=str(filepath), version=Version(None, None)).load()
    assert isinstance(latest, Path)
    assert latest == (filepath / second / "adapter").resolve()
    assert sorted(p.name for p in latest.iterdir()) == ["config.json", "model.safetensors"]
    assert _tag(latest) == "second"

    pinned = HFDirectoryDataset(filepath=str(filepath), version=Version(load=first, save=None))
    assert pinned.load() == (filepath / first / "adapter").resolve()
    assert _tag(pinned.load()) == "first"
    assert sorted(p.name for p in filepath.iterdir()) == sorted([first, second])  # no temp dirs


def test_real_pretrained_config_round_trip(tmp_path):
    from transformers import Phi3Config

    config = Phi3Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=64)
    ds = HFDirectoryDataset(filepath=str(tmp_path / "cfg"), version=Version(None, None))
    ds.save(config)
    loaded = Phi3Config.from_pretrained(ds.load())
    assert (loaded.hidden_size, loaded.num_hidden_layers, loaded.vocab_size) == (32, 1, 64)
    assert loaded.model_type == "phi3"


def test_failed_save_leaves_no_version_and_propagates(tmp_path):
    filepath = tmp_path / "adapter"
    ds = HFDirectoryDataset(filepath=str(filepath), version=Version(None, None))
    with pytest.raises(DatasetError, match="disk full halfway") as excinfo:
        ds.save(CrashingModel())
    assert isinstance(excinfo.value.__cause__, RuntimeError)
    leftovers = list(filepath.iterdir()) if filepath.exists() else []
    assert leftovers == []
    assert not ds.exists()


def test_failed_overwrite_keeps_old_unversioned_dir(tmp_path):
    filepath = tmp_path / "tokenizer"
    ds = HFDirectoryDataset(filepath=str(filepath))
    ds.save(FakeModel("old"))
    with pytest.raises(DatasetError):
        ds.save(CrashingModel())
    assert _tag(ds.load()) == "old"
    assert sorted(p.name for p in filepath.iterdir()) == ["config.json", "model.safetensors"]
    ds.save(FakeModel("new"))
    assert _tag(ds.load()) == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer"]  # old/tmp removed


def test_missing_directory_raises_naming_path(tmp_path):
    missing = tmp_path / "nothing_here"
    with pytest.raises(DatasetError, match="nothing_here"):
        HFDirectoryDataset(filepath=str(missing)).load()
    versioned = HFDirectoryDataset(filepath=str(missing), version=Version(None, None))
    with pytest.raises(DatasetError, match="nothing_here"):
        versioned.load()
    assert not versioned.exists()
    old = "2020-01-01T00.00.00.000Z"
    pinned = HFDirectoryDataset(filepath=str(missing), version=Version(old, None))
    with pytest.raises(DatasetError, match="2020-01-01T00.00.00.000Z"):
        pinned.load()


def test_rejects_objects_without_save_pretrained_and_remote_paths(tmp_path):
    with pytest.raises(DatasetError, match="save_pretrained"):
        HFDirectoryDataset(filepath=str(tmp_path / "x")).save({"not": "a model"})
    with pytest.raises(DatasetError, match="local filesystem only"):
        HFDirectoryDataset(filepath="s3://bucket/model")


def test_describe_and_preview(tmp_path):
    filepath = tmp_path / "baked_model"
    version = _save_new_version(filepath, FakeModel())
    ds = HFDirectoryDataset(filepath=str(filepath), version=Version(None, None))
    described = ds._describe()
    assert str(described["filepath"]) == filepath.as_posix()
    assert described["version"] == Version(None, None)
    assert "baked_model" in str(ds)
    assert ds.exists()

    preview = json.loads(ds.preview())
    assert preview["version"] == version
    assert preview["model_type"] == "phi3"
    assert preview["architectures"] == ["Phi3ForCausalLM"]
    config_size = (filepath / version / "baked_model" / "config.json").stat().st_size
    assert preview["files"] == [
        {"name": "config.json", "size_bytes": config_size},
        {"name": "model.safetensors", "size_bytes": 16},
    ]
    assert preview["n_files"] == 2


def test_catalog_builds_versioned_entry(tmp_path):
    catalog = DataCatalog.from_config(
        {
            "so8t_adapter": {
                "type": "so8t_kedro.datasets.HFDirectoryDataset",
                "filepath": str(tmp_path / "06_models" / "so8t_adapter"),
                "versioned": True,
            }
        }
    )
    assert isinstance(catalog["so8t_adapter"], HFDirectoryDataset)
    assert not catalog.exists("so8t_adapter")
    catalog.save("so8t_adapter", FakeModel("cat"))
    loaded = catalog.load("so8t_adapter")
    assert loaded.parent.parent == (tmp_path / "06_models" / "so8t_adapter").resolve()
    assert loaded.name == "so8t_adapter"
    assert _tag(loaded) == "cat"
