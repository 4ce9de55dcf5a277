"""Score four-class records with a causal LM: the classifier behind evaluation and A/B tests.

A model is a base directory (the embedded default, a real Phi-3 directory or, after export,
a baked one) plus optionally an adapter directory (LoRA + SO8T gates), given directly or as
the :class:`~so8t_kedro.models.selection.ModelReference` a pipeline resolved once. Each request's four
label log-likelihoods come from :class:`so8t_kedro.decision.classifier.FourClassScorer`, the scoring
the training loss uses, so original, retrained and baked models are compared like with like.
The reference classifier's predictions come in the same table
(:func:`score_reference_classifier`), so every metric reads both alike.

No kedro here: the pipelines' nodes call these functions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.pipeline import Pipeline

from so8t_kedro.decision import reference_classifier as reference
from so8t_kedro.decision.classifier import FourClassScorer
from so8t_kedro.decision.metrics import softmax
from so8t_kedro.labels import LABEL_TO_ID, LABELS
from so8t_kedro.models.loading import load_base_model_for
from so8t_kedro.models.selection import LANGUAGE_MODEL, ModelReference
from so8t_kedro.so8t import load_adapter

logger = logging.getLogger(__name__)

SCORE_COLUMNS: list[str] = [f"ll_{label}" for label in LABELS]
PROBABILITY_COLUMNS: list[str] = [f"p_{label}" for label in LABELS]
PREDICTION_COLUMNS: list[str] = [
    "id", "text", "language", "domain", "label", "predicted", "correct", "confidence",
    *SCORE_COLUMNS, *PROBABILITY_COLUMNS, "latency_ms", "model", "base_model_dir",
    "adapter_dir",
]


def resolve_device(device: str | None) -> torch.device:
    """``"auto"`` / ``None``: the first GPU when there is one, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_scoring_model(
    base_model_dir: str | Path,
    adapter_dir: str | Path | None = None,
    *,
    quantization: str | None = None,
    device: str | None = "auto",
):
    """``(model, tokenizer)`` ready for scoring: the base model, plus the adapter when given.

    bf16 on CUDA, fp32 on the CPU; ``quantization`` as in ``load_base_model``. The base's
    tokenizer serves the adapter too: training never changes the tokenizer (the copy saved
    beside the adapter is for users who load it with PEFT alone).
    """
    model, tokenizer = load_base_model_for(resolve_device(device), base_model_dir,
                                           quantization=quantization)
    if adapter_dir is not None:
        model = load_adapter(model, adapter_dir)
    model.eval()
    return model, tokenizer


def score_requests(
    model,
    scorer: FourClassScorer,
    texts: list[str],
    languages: list[str],
    *,
    batch_size: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Label log-likelihoods [N, 4] and per-request latency in milliseconds [N].

    A request's latency is the wall time of its batch (tokenising, moving to the device,
    the forward pass) divided by the batch's size: with ``batch_size=1`` it is the latency
    one caller sees; larger batches trade it for throughput.
    """
    if batch_size < 1:
        raise ValueError(f"scoring batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    scores = np.zeros((len(texts), len(LABELS)), dtype=np.float64)
    latency = np.zeros(len(texts), dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            stop = min(start + batch_size, len(texts))
            began = time.perf_counter()
            batch = scorer.batch(texts[start:stop], languages[start:stop]).to(device)
            batch_scores = scorer.label_log_likelihoods(model, batch).float().cpu()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed_ms = (time.perf_counter() - began) * 1e3
            scores[start:stop] = batch_scores.numpy()
            latency[start:stop] = elapsed_ms / (stop - start)
    return scores, latency


def predictions_table(records: pd.DataFrame, scores: np.ndarray, latency_ms: np.ndarray,
                      *, model: str, base_model_dir: str | Path,
                      adapter_dir: str | Path | None) -> pd.DataFrame:
    """One row per record: true label, predicted label, scores, probabilities (T = 1),
    latency, and which model produced them (:data:`PREDICTION_COLUMNS`)."""
    probabilities = softmax(scores)
    predicted = np.asarray(LABELS)[probabilities.argmax(axis=1)]
    table = pd.DataFrame({
        "id": records["id"].astype(str).to_numpy(),
        "text": records["text"].to_numpy(),
        "language": records["language"].to_numpy(),
        "domain": records["domain"].to_numpy(),
        "label": records["label"].to_numpy(),
        "predicted": predicted,
    })
    table["correct"] = table["label"] == table["predicted"]
    table["confidence"] = probabilities.max(axis=1)
    table[SCORE_COLUMNS] = scores
    table[PROBABILITY_COLUMNS] = probabilities
    table["latency_ms"] = latency_ms
    table["model"] = model
    table["base_model_dir"] = str(base_model_dir)
    table["adapter_dir"] = "" if adapter_dir is None else str(adapter_dir)
    return table[PREDICTION_COLUMNS]


def predict_records(record_sets: Sequence[pd.DataFrame], base_model_dir: str | Path,
                    adapter_dir: str | Path | None, *, model_name: str, fmt: str,
                    params: Mapping[str, Any]) -> list[pd.DataFrame]:
    """Load the model once, score every record of each set: one :func:`predictions_table`
    per set, in order.

    ``params``: ``batch_size``, ``max_probe_tokens``, ``quantization``, ``device``
    (``params:scoring``).
    """
    if any(records.empty for records in record_sets):
        raise ValueError(f"{model_name}: there are no records to score")
    model, tokenizer = load_scoring_model(base_model_dir, adapter_dir,
                                          quantization=params["quantization"],
                                          device=params["device"])
    scorer = FourClassScorer(tokenizer, fmt=fmt,
                             max_probe_tokens=int(params["max_probe_tokens"]))
    tables = []
    for records in record_sets:
        scores, latency = score_requests(model, scorer, records["text"].tolist(),
                                         records["language"].tolist(),
                                         batch_size=int(params["batch_size"]))
        table = predictions_table(records, scores, latency, model=model_name,
                                  base_model_dir=base_model_dir, adapter_dir=adapter_dir)
        logger.info("%s: scored %d requests, accuracy %.3f, latency p50 %.1f ms", model_name,
                    len(table), table["correct"].mean(), table["latency_ms"].median())
        tables.append(table)
    return tables


def score_model(
    record_sets: Sequence[pd.DataFrame],
    model: ModelReference,
    scoring_params: Mapping[str, Any],
    sft_format: str,
) -> list[pd.DataFrame]:
    """Score each set of records with the language model ``model`` refers to (resolved
    once by :func:`~so8t_kedro.models.selection.resolve_model`), loaded once: one
    :func:`predict_records` table per set (probabilities of the four labels, the predicted
    label, per-request latency).

    ``sft_format`` is the /think format the model was trained on (its decision probe).
    """
    if model.kind != LANGUAGE_MODEL:
        raise ValueError(f"model {model.name!r} is a {model.kind}, not a language model: "
                         "score it with score_reference_classifier")
    return predict_records(record_sets, model.base_dir, model.adapter_dir,
                           model_name=model.name, fmt=sft_format, params=scoring_params)


def score_reference_classifier(classifier: Pipeline, records: pd.DataFrame,
                               model_name: str) -> pd.DataFrame:
    """A predictions table of the reference classifier on ``records``, as ``score_model``'s
    for a model: its scores are the logits (soft-maxed, its probabilities), the latency that
    of one request at a time, and ``base_model_dir`` says what the classifier is."""
    if records.empty:
        raise ValueError(f"{model_name}: there are no records to score")
    scores, latency = reference.score_requests_one_by_one(classifier, records["text"].tolist())
    return predictions_table(records, scores, latency, model=model_name,
                             base_model_dir=reference.describe(classifier), adapter_dir=None)


def scores_of(predictions: pd.DataFrame) -> np.ndarray:
    """The [N, 4] label log-likelihoods of a :func:`predictions_table`."""
    return predictions[SCORE_COLUMNS].to_numpy(dtype=np.float64)


def label_ids_of(predictions: pd.DataFrame) -> np.ndarray:
    """The true label ids of a :func:`predictions_table`."""
    return predictions["label"].map(LABEL_TO_ID).to_numpy()
