"""ModelCardHooks: the model card is written beside a saved model and again with the
evaluation (the card itself: tests/reporting/test_model_card.py)."""

from __future__ import annotations

import yaml

from tests.helpers.evaluation_metrics import EVALUATION


class FolderCatalog:
    """The two catalog calls ModelCardHooks makes: ``load`` (a model entry loads as its
    folder) and ``get`` (the dataset, to read its version)."""

    def __init__(self, folder):
        self.folder = folder

    def load(self, name):
        return self.folder

    def get(self, name):
        from kedro.io import MemoryDataset

        return MemoryDataset()  # not versioned


def test_the_card_is_written_on_save_and_again_with_the_evaluation(tmp_path, sft_samples,
                                                                    project_root):
    from types import SimpleNamespace

    from so8t_kedro.tracking.cards import ModelCardHooks

    params = yaml.safe_load((project_root / "conf/base/parameters_training.yml").read_text())
    params |= yaml.safe_load((project_root / "conf/base/parameters_model_cards.yml")
                             .read_text())
    hooks = ModelCardHooks()
    hooks.after_context_created(SimpleNamespace(params=params))
    hooks.after_catalog_created(FolderCatalog(tmp_path), "2026-02-02T00.00.00.000Z")
    hooks.before_pipeline_run()
    hooks.after_dataset_loaded("thinking_sft_dataset", sft_samples)
    hooks.after_dataset_saved("so8t_adapter", object())
    first = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "Not evaluated yet" in first and "| ALLOW |" in first
    hooks.after_dataset_saved("evaluation_metrics", EVALUATION)
    second = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "Not evaluated yet" not in second
    assert "| reference_classifier | 0.800 |" in second
