"""The four-class decision read from a causal language model.

For a request, the model sees the /think decision probe (the chat prompt plus the assistant
text that precedes the label in the final part, see ``think_format.render_decision_probe``)
and each label's continuation (``think_format.label_continuations``). The label's score is
the log-likelihood of its continuation tokens, summed; the four scores, divided by a
temperature and soft-maxed, are the decision's probability distribution.

The same scoring is the training loss's four-class term and the evaluation's classifier, and
it works unchanged on the original, retrained and baked models. Framework-free (no kedro).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from so8t_kedro.labels import LABELS
from so8t_kedro.think_format import DEFAULT_FORMAT, label_continuations, render_decision_probe


def continuation_ids(tokenizer, prefix_ids: list[int], prefix: str, suffix: str) -> list[int]:
    """The ids ``suffix`` gets when it follows ``prefix`` (whose ids are ``prefix_ids``).

    Tokenising the whole string (not the two parts apart) gives the ids the model sees in
    running text; the check makes sure the boundary does not merge across the two parts.
    """
    whole = tokenizer(prefix + suffix, add_special_tokens=False)["input_ids"]
    if whole[: len(prefix_ids)] != prefix_ids:
        raise ValueError(
            "the tokenizer merges tokens across the prompt/continuation boundary "
            f"(prefix ends {prefix[-20:]!r}, continuation starts {suffix[:20]!r})"
        )
    return whole[len(prefix_ids):]


def split_token_ids(tokenizer, prefix: str, suffix: str) -> tuple[list[int], list[int]]:
    """Token ids of ``prefix + suffix``, split where ``prefix``'s own tokens end."""
    head = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    return head, continuation_ids(tokenizer, head, prefix, suffix)


@dataclass(frozen=True)
class ProbeBatch:
    """Four sequences per request (one per label), left-padded so that every sequence ends
    at the last position and the continuations sit in the last ``keep - 1`` positions.

    ``target_mask`` [4N, L] is true on continuation tokens; rows are request-major (request
    i's label j is row 4i + j). ``position_ids`` count real tokens only, so padding does not
    shift positions.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    target_mask: torch.Tensor
    keep: int  # logits needed: the longest continuation + 1

    def to(self, device: torch.device | str) -> ProbeBatch:
        return ProbeBatch(self.input_ids.to(device), self.attention_mask.to(device),
                          self.position_ids.to(device), self.target_mask.to(device), self.keep)


class FourClassScorer:
    """Builds probe batches for a tokenizer and scores them with any causal LM."""

    def __init__(self, tokenizer, fmt: str = DEFAULT_FORMAT, max_probe_tokens: int = 512):
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.max_probe_tokens = max_probe_tokens
        self.continuations = label_continuations()
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def encode(self, text: str, language: str) -> list[tuple[list[int], list[int]]]:
        """Per label (in ``LABELS`` order), (probe ids, continuation ids).

        A probe longer than ``max_probe_tokens`` loses tokens from the left, keeping the
        decision position at its end.
        """
        probe = render_decision_probe(text, self.fmt, language)
        head = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
        return [(head[-self.max_probe_tokens:], continuation_ids(self.tokenizer, head, probe,
                                                                 self.continuations[label]))
                for label in LABELS]

    def batch(self, texts: Sequence[str], languages: Sequence[str]) -> ProbeBatch:
        """A left-padded :class:`ProbeBatch` for requests ``texts`` in ``languages``."""
        return self.collate([self.encode(text, lang)
                             for text, lang in zip(texts, languages, strict=True)])

    def collate(self, encoded: Sequence[Sequence[tuple[list[int], list[int]]]]) -> ProbeBatch:
        """A left-padded :class:`ProbeBatch` from :meth:`encode`'s results, one per request
        (the training loop encodes each sample once and collates every step)."""
        rows = [pair for request in encoded for pair in request]
        length = max(len(head) + len(tail) for head, tail in rows)
        input_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), length), dtype=torch.long)
        target = torch.zeros((len(rows), length), dtype=torch.bool)
        for r, (head, tail) in enumerate(rows):
            ids = head + tail
            input_ids[r, length - len(ids):] = torch.tensor(ids)
            attention[r, length - len(ids):] = 1
            target[r, length - len(tail):] = True
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        keep = max(len(tail) for _, tail in rows) + 1
        return ProbeBatch(input_ids, attention, positions, target, keep)

    @staticmethod
    def label_log_likelihoods(model, batch: ProbeBatch) -> torch.Tensor:
        """[N, 4] summed log-likelihoods of each label's continuation (differentiable).

        Only the last ``batch.keep`` positions' logits are computed (``logits_to_keep``):
        the vocabulary projection of the whole probe would cost more than the scoring.
        """
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids, logits_to_keep=batch.keep).logits
        # logits[:, k] predicts the token after position L - keep + k.
        log_probs = F.log_softmax(logits[:, :-1].float(), dim=-1)
        next_ids = batch.input_ids[:, -batch.keep + 1:]
        token_ll = log_probs.gather(-1, next_ids.unsqueeze(-1)).squeeze(-1)
        token_ll = token_ll * batch.target_mask[:, -batch.keep + 1:]
        return token_ll.sum(dim=-1).view(-1, len(LABELS))
