"""The catalog resolves every path from the webdataset root, in both environments."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader

from so8t_kedro.settings import CONFIG_LOADER_ARGS

LAYERS = {"raw", "intermediate", "primary", "model_input", "reporting"}


def load_catalog(project_root: Path, env: str) -> dict:
    loader = OmegaConfigLoader(
        conf_source=str(project_root / "conf"), base_env="base", default_run_env=env
    )
    return {name: entry for name, entry in loader["catalog"].items() if not name.startswith("_")}


def entry_path(entry: dict) -> str | None:
    """Where an entry reads and writes; None for an in-memory one."""
    return entry.get("filepath") or entry.get("path")


#: Catalog entries shipped with the repository, read from the same place in every environment.
SHIPPED = {"seed_dataset": "data/01_raw/so8t_seed_dataset.jsonl",
           "think_phrase_bank": "conf/base/think_phrase_bank.yml"}


@pytest.mark.parametrize(
    ("env", "root", "expected"),
    [
        (
            "local",
            "data/",
            {
                "four_class_partitions": "data/01_raw/four_class",
                "thinking_sft_dataset": "data/05_model_input/thinking_sft/thinking_sft_dataset.jsonl",
            },
        ),
        (
            "webdataset",
            "D:/webdataset/",
            {
                "four_class_partitions": "D:/webdataset/processed/four_class",
                "thinking_sft_dataset": (
                    "D:/webdataset/processed/thinking_sft/thinking_sft_dataset.jsonl"
                ),
            },
        ),
    ],
)
def test_paths_follow_the_environment_root(project_root, env, root, expected):
    catalog = load_catalog(project_root, env)
    for name, path in expected.items():
        assert entry_path(catalog[name]) == path
    for name, entry in catalog.items():
        if name in SHIPPED:  # in the repo, the same in every environment
            assert entry_path(entry) == SHIPPED[name]
        elif entry["type"] != "MemoryDataset":
            assert entry_path(entry).startswith(root), name


def test_every_dataset_sits_on_a_kedro_viz_layer(project_root):
    catalog = load_catalog(project_root, "local")
    layers = {name: entry["metadata"]["kedro-viz"]["layer"] for name, entry in catalog.items()}
    assert set(layers.values()) <= LAYERS | {"models", "model_output", "feature"}
    assert LAYERS <= set(layers.values())


def test_only_in_pipeline_hand_offs_are_left_in_memory(kedro_project):
    """Whatever one pipeline passes to another is persisted (declared, on its layer).

    Hand-offs inside one pipeline stay undeclared on purpose: Kedro then makes them
    MemoryDatasets, or SharedMemoryDatasets under ParallelRunner; a declared MemoryDataset
    would break ParallelRunner. kedro-viz shows them without a layer.
    """
    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession

    with KedroSession.create(kedro_project) as session:
        catalog = session.load_context().catalog
    for name in pipelines["__default__"].datasets():
        if name.startswith("params:") or name == "parameters":
            continue
        if name in catalog:
            assert catalog.get(name).metadata["kedro-viz"]["layer"], name
        else:
            owners = [p for p, pipe in pipelines.items()
                      if p != "__default__" and name in pipe.datasets()]
            assert len(owners) == 1, (name, owners)


def test_an_override_keeps_the_rest_of_its_section(project_root, tmp_path):
    """With parameters in conf/local, `--params=training.resume=latest` must change that key
    only (measured before the soft merge: params:training kept 1 of its keys)."""
    conf = tmp_path / "conf"
    shutil.copytree(project_root / "conf", conf, ignore=shutil.ignore_patterns("local"))
    (conf / "local").mkdir()
    (conf / "local" / "parameters_training.yml").write_text("training:\n  epochs: 1\n")
    base = OmegaConfigLoader(str(conf), **CONFIG_LOADER_ARGS)["parameters"]["training"]
    loaded = OmegaConfigLoader(str(conf), runtime_params={"training": {"resume": "latest"}},
                               **CONFIG_LOADER_ARGS)["parameters"]["training"]
    assert loaded == {**base, "resume": "latest"} and loaded["epochs"] == 1
    assert len(loaded) > 10
