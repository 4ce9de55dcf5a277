"""Model cards: Hugging Face README.md metadata and the sections a reader needs."""

from __future__ import annotations

import yaml

from so8t_kedro.labels import LABELS
from so8t_kedro.reporting.model_card import TrainingData, model_card, write_model_card
from tests.helpers.evaluation_metrics import EVALUATION


def split_card(card: str) -> tuple[dict, str]:
    assert card.startswith("---\n")
    front, body = card.removeprefix("---\n").split("\n---\n", 1)
    return yaml.safe_load(front), body


def test_training_data_counts_the_train_split_per_label_and_language(sft_samples):
    data = TrainingData.from_samples(sft_samples, "2026-01-01T00.00.00.000Z")
    train = sft_samples[sft_samples["split"] == "train"]
    assert list(data.counts.index) == list(LABELS)
    assert int(data.counts.to_numpy().sum()) == len(train)
    assert sorted(data.counts.columns) == sorted(train["language"].unique())


def test_an_adapter_card_has_metadata_data_hyperparameters_and_the_evaluation(sft_samples):
    data = TrainingData.from_samples(sft_samples, "v1")
    card = model_card("adapter", base_model="D:/models/Borea", data=data,
                      params={"training": {"lora": {"r": 64}, "seed": 42}},
                      evaluation=EVALUATION)
    metadata, body = split_card(card)
    assert metadata["library_name"] == "peft"
    assert metadata["base_model"] == "D:/models/Borea"
    assert metadata["language"] == sorted(data.counts.columns)
    assert {"license", "license_name", "license_link"} <= set(metadata)
    assert metadata["license"] is None  # for the owner to fill in
    assert "Dataset version: `v1`" in body
    assert "| training.lora.r | `64` |" in body
    # the model beside the reference classifier and the majority class, then calibration
    assert "| so8t | 0.500 | 0.450 | 0.200 | 0.300 | 0.120 | 0.600 |" in body
    assert "| reference_classifier | 0.800 | 0.810 |" in body
    assert "| majority class (ALLOW) | 0.250 | 0.100 | 1.000 | – |" in body
    assert "| calibrated | 0.740 | 0.080 | 0.550 | 1.000 |" in body
    for section in ("## Intended use", "## Out-of-scope use", "## Limitations"):
        assert section in body
    assert "Ollama" in body and "demonstration" in body


def test_a_baked_card_says_what_baking_keeps_and_an_unevaluated_one_says_so(tmp_path):
    card = model_card("baked", base_model="embedded", params={}, data=None, evaluation=None)
    metadata, body = split_card(card)
    assert metadata["library_name"] == "transformers"
    assert "bake_verification" in body
    assert "Not evaluated yet" in body
    assert "Not recorded by this run." in body
    path = write_model_card(tmp_path, card)
    assert path == tmp_path / "README.md" and path.read_text(encoding="utf-8") == card
