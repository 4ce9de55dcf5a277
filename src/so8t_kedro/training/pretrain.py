"""Pre-training of the embedded base: plain next-token training on raw texts.

A randomly initialised model is no "original model": LoRA on random weights learns slowly
and an A/B test against it means little. A few epochs on the raw requests give the
embedded default some knowledge of the language (not of the /think format or the labels),
as a real base model has. The batches are the training loop's own (:func:`loop.collate`,
left-padded, position ids over real tokens, :func:`loop.lm_loss`), with every token a
target. Framework-free (no kedro).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from so8t_kedro.training.loop import IGNORE_INDEX, Example, collate, lm_loss


def text_examples(tokenizer, texts: Iterable[str]) -> list[Example]:
    """Each text and the eos token, every token after the first a target: the first is the
    one-token "prompt" (nothing before it predicts it; in a left-padded row a pad would)."""
    examples = []
    for text in texts:
        ids = tokenizer(text + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        examples.append(Example(input_ids=ids, labels=[IGNORE_INDEX, *ids[1:]], label_id=-1,
                                prompt_length=1))
    return examples


def next_token_loss(model, examples: Sequence[Example], pad_id: int) -> torch.Tensor:
    """Mean next-token cross-entropy over every real token of one batch of ``examples``."""
    batch = collate(examples, pad_id)
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                   attention_mask=batch["attention_mask"]).logits
    return lm_loss(logits, batch["labels"])


def pretrain_causal_lm(model, tokenizer, texts: Iterable[str], *, epochs: int,
                       learning_rate: float, batch_size: int, seed: int):
    """Full-parameter next-token training of ``model`` on ``texts`` (each followed by the
    eos token), in place: AdamW at a constant ``learning_rate``, ``epochs`` passes in a
    random order drawn from ``seed``. Deterministic for the same inputs."""
    examples = text_examples(tokenizer, texts)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(examples), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            batch = [examples[i] for i in order[start : start + batch_size]]
            next_token_loss(model, batch, tokenizer.pad_token_id).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    model.eval()
    return model
