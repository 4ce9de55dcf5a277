"""The four-class score: its definition, and reading every label in one pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from so8t_kedro.decision.classifier import (
    DecisionReadout,
    FourClassScorer,
    decision_rows,
    label_scores,
    scored_token_counts,
)
from so8t_kedro.decision.metrics import softmax
from so8t_kedro.models.loading import load_base_model
from so8t_kedro.think import render_prompt
from tests.helpers.tolerances import forward_bound, max_abs_logit

# Two labels share their first token (7), as a tokenizer without whole-label pieces might.
SHARED_FIRST = [[5, 9], [6, 11, 12, 9], [7, 1, 9], [7, 2, 3, 9]]


def test_each_label_counts_its_tokens_up_to_the_one_that_tells_it_apart():
    assert scored_token_counts(SHARED_FIRST) == [1, 1, 2, 2]
    assert scored_token_counts([[1, 9], [2, 9], [3, 9], [4, 9]]) == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="prefix"):
        scored_token_counts([[1], [1, 2], [3], [4]])


def test_a_uniform_model_gives_labels_of_different_lengths_equal_scores():
    """The constructed case: every token costs log(V), labels are 1 to 4 tokens long. The
    summed continuation favours the shortest label by V per token; the score does not."""
    vocabulary = 4000
    continuations = [[10], [11, 5, 6, 7], [12, 5], [13, 5, 6]]
    token_log_probs = [np.full(len(c), -math.log(vocabulary)) for c in continuations]
    scores = np.asarray(label_scores(token_log_probs, continuations))
    np.testing.assert_allclose(softmax(scores[None])[0], [0.25] * 4, rtol=1e-12)
    summed = np.asarray([lp.sum() for lp in token_log_probs])
    assert softmax(summed[None])[0][0] > 0.999  # what the old definition did


def test_scores_take_torch_and_numpy_alike():
    log_probs = [torch.tensor([[-1.0, -2.0], [-3.0, -4.0]])] * 4
    scores = label_scores(log_probs, SHARED_FIRST)
    assert [s.tolist() for s in scores] == [[-1.0, -3.0], [-1.0, -3.0], [-3.0, -7.0],
                                            [-3.0, -7.0]]


# Every label needs two tokens, along two paths (6 and 7): two tail segments.
TWO_PATHS = [[6, 1, 9], [6, 2, 3, 9], [7, 1, 9], [7, 2, 9]]


@pytest.mark.parametrize(("continuations", "segments"), [(SHARED_FIRST, [[7]]),
                                                         (TWO_PATHS, [[6], [7]])])
def test_labels_that_share_tokens_are_read_from_one_row_as_from_separate_sequences(
        tiny_base_dir, continuations, segments):
    """Prefix + label paths as 4-D-masked segments of one row (with padding from a longer
    request) give each label the log-likelihood of its own separate sequence."""
    model, tokenizer = load_base_model(tiny_base_dir)
    scorer = FourClassScorer(tokenizer)
    readout = DecisionReadout.build(scorer.prefix_ids, continuations)
    # SHARED_FIRST: one segment, prefix + 7; labels 0 and 1 are read at the prefix's end.
    assert readout.tokens == tuple(t for path in segments for t in [*scorer.prefix_ids, *path])
    prompts = [scorer.prompt_ids(render_prompt(text, "ja")) for text in ["短い", "もっと長い依頼の文です"]]
    rows = decision_rows(prompts, [len(p) for p in prompts], readout, tokenizer.pad_token_id)
    counts = scored_token_counts(continuations)
    tolerance = 2 * forward_bound(torch.float32, model.config,
                                  torch.tensor(max_abs_logit(model)))
    with torch.no_grad():
        logits = model(**rows.model_inputs(torch.float32)).logits
        scores = readout.scores(logits[:, -len(readout.tokens):])
        for i, prompt in enumerate(prompts):
            for j, continuation in enumerate(continuations):
                head = prompt + scorer.prefix_ids
                alone = torch.log_softmax(
                    model(input_ids=torch.tensor([head + continuation])).logits[0], -1)
                expected = sum(float(alone[len(head) - 1 + k, t])
                               for k, t in enumerate(continuation[: counts[j]]))
                # one row vs separate sequences regroups float32 sums: each log-softmax
                # term is within twice the logits' difference (forward_bound)
                assert float(scores[i, j]) == pytest.approx(expected, abs=tolerance * counts[j])
