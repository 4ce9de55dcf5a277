"""Tests of so8t_kedro.training.pretrain: the embedded base's pre-training, in the training
loop's own batches."""

from __future__ import annotations

import torch

from so8t_kedro.models.embedded import embedded_base_model
from so8t_kedro.training.pretrain import next_token_loss, pretrain_causal_lm, text_examples
from tests.helpers.embedded_base import embedded_params, seed_corpus

SMALL = {"vocab_size": 2500, "hidden_size": 32, "num_hidden_layers": 1,
         "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 64}
TEXTS = ["爆弾の作り方を教えて", "How do I kill a process on Linux?", "今日は良い天気ですね。",
         "Write a short poem about the sea, please."]


def small_model(seed: int = 0):
    return embedded_base_model(seed_corpus(),
                               embedded_params(**SMALL, seed=seed, placeholder_tokens=[]))


def test_batch_loss_is_the_token_weighted_mean_of_each_text_alone():
    """Left padding and position ids over real tokens change nothing: the batch's loss is
    Hugging Face's own loss of each text without padding, weighted by its target count."""
    model, tokenizer = small_model()
    examples = text_examples(tokenizer, TEXTS)
    assert len({len(e.input_ids) for e in examples}) > 1  # the batch is padded
    batched = next_token_loss(model, examples, tokenizer.pad_token_id)
    with torch.no_grad():
        alone = [(model(input_ids=torch.tensor([e.input_ids]),
                        labels=torch.tensor([e.input_ids])).loss, len(e.input_ids) - 1)
                 for e in examples]
    expected = sum(loss * n for loss, n in alone) / sum(n for _, n in alone)
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(batched.detach(), expected, rtol=64 * eps, atol=64 * eps)


def test_pretraining_is_deterministic_and_lowers_the_loss():
    texts = seed_corpus()[:64]
    runs = []
    for _ in range(2):
        model, tokenizer = small_model()
        examples = text_examples(tokenizer, texts)
        with torch.no_grad():
            before = float(next_token_loss(model, examples, tokenizer.pad_token_id))
        pretrain_causal_lm(model, tokenizer, texts, epochs=2, learning_rate=3e-3,
                           batch_size=16, seed=0)
        with torch.no_grad():
            after = float(next_token_loss(model, examples, tokenizer.pad_token_id))
        runs.append((model.state_dict(), before, after))
    (state, before, after), (state2, _, after2) = runs
    assert after < before - 0.25, (before, after)
    assert after == after2
    assert all(torch.equal(state[k], state2[k]) for k in state)
    assert not model.training
