"""Tests of so8t_kedro.decision.scoring: a model reference scored on records, with and
without its adapter, one request at a time and in batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from so8t_kedro.decision.scoring import load_scoring_model, score_model
from so8t_kedro.labels import LABELS
from so8t_kedro.models.selection import ModelReference
from tests.helpers.evaluation import SCORING, seed_sample_records
from tests.helpers.tolerances import forward_bound, max_abs_logit


@pytest.fixture(scope="module")
def seed_records() -> pd.DataFrame:
    return seed_sample_records()


def test_scoring_reads_four_probabilities_per_request(seed_records, tiny_base_dir,
                                                       tiny_adapter_dir):
    original = ModelReference(name="original", base_dir=tiny_base_dir)
    so8t = ModelReference(name="so8t", base_dir=tiny_base_dir, adapter_dir=tiny_adapter_dir)
    [base_only] = score_model([seed_records], original, SCORING, "quadruple")
    [adapted] = score_model([seed_records], so8t, SCORING, "quadruple")
    [batched] = score_model([seed_records], so8t, {**SCORING, "batch_size": 5}, "quadruple")
    probabilities = adapted[[f"p_{label}" for label in LABELS]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
    assert (adapted["latency_ms"] > 0).all()
    assert adapted["predicted"].isin(LABELS).all()
    assert adapted["adapter_dir"].iloc[0] == str(tiny_adapter_dir)
    assert base_only["adapter_dir"].iloc[0] == ""
    scores = [f"ll_{label}" for label in LABELS]
    # the adapter changes the model; left-padded batches score like single requests up to
    # float32 regrouping (other matrix shapes, other BLAS blocking): a score is a mean of
    # log-softmax values, each within twice the logits' difference
    assert not np.allclose(base_only[scores], adapted[scores])
    model, _ = load_scoring_model(tiny_base_dir, tiny_adapter_dir, device="cpu")
    bound = 2 * forward_bound(torch.float32, model.config, torch.tensor(max_abs_logit(model)))
    np.testing.assert_allclose(batched[scores], adapted[scores], rtol=0, atol=bound)


def test_the_reference_classifier_is_not_scored_as_a_language_model(seed_records):
    reference = ModelReference(name="reference", base_dir=None, kind="reference_classifier")
    with pytest.raises(ValueError, match="'reference' is a reference_classifier, not a "
                                         "language model"):
        score_model([seed_records], reference, SCORING, "quadruple")
