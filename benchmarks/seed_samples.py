"""Shared by the benchmarks that train the embedded default on the shipped seed data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def project_parameters(env: str | None = None) -> dict:
    """The parameters as ``kedro run [--env=env]`` reads them (``conf/base``, ``env`` over
    it; interpolations such as ``${pii.placeholders}`` resolved), not the bare YAML."""
    from kedro.config import OmegaConfigLoader

    from so8t_kedro.settings import CONFIG_LOADER_ARGS

    return OmegaConfigLoader(conf_source=str(PROJECT_ROOT / "conf"), env=env,
                             **CONFIG_LOADER_ARGS)["parameters"]


def render_seed_samples(rows: pd.DataFrame) -> pd.DataFrame:
    """Seed records rendered as /think SFT samples by the thinking_sft pipeline's node, with
    the reference classifier's cross-fitted scores of the train rows (the training
    pipeline's ``attach_reference_scores``, which the embedded recipe's distillation reads);
    of every 8 rows, 6 go to train and 2 to val."""
    from so8t_kedro.labels import LABEL_TO_ID
    from so8t_kedro.pipelines.thinking_sft.nodes import render_thinking_sft_samples
    from so8t_kedro.pipelines.training.nodes import attach_reference_scores

    records = rows.assign(label_id=rows["label"].map(LABEL_TO_ID), source="seed",
                          split=["val" if i % 8 >= 6 else "train" for i in range(len(rows))])
    conf = PROJECT_ROOT / "conf/base"
    phrase_bank = yaml.safe_load((conf / "think_phrase_bank.yml").read_text(encoding="utf-8"))
    params = project_parameters()
    samples = render_thinking_sft_samples(records, phrase_bank,
                                          {**params["thinking_sft"], "seed": 0})
    return attach_reference_scores(samples, records[records["split"] == "train"],
                                   params["evaluation"]["reference_classifier"],
                                   params["training"]["distillation"])


def build_embedded(rows: pd.DataFrame, out_dir: Path, pretrain_epochs: int | None = None) -> Path:
    """The training pipeline's embedded default (``conf/base/parameters_training.yml``'s
    ``base_model.embedded``) built on the rendered seed ``rows`` and saved to ``out_dir``;
    ``pretrain_epochs`` overrides its pre-training epochs."""
    from so8t_kedro.pipelines.training.nodes import build_embedded_base_model

    embedded = project_parameters()["base_model"]["embedded"]
    if pretrain_epochs is not None:
        embedded = {**embedded, "pretrain": {**embedded["pretrain"], "epochs": pretrain_epochs}}
    build_embedded_base_model(render_seed_samples(rows), embedded).save_pretrained(out_dir)
    return out_dir
