"""The four-class decision read from a causal language model.

For a request, the model sees the /think decision probe (the chat prompt plus the assistant
text that precedes the label in the final part, see ``think.render_decision_probe``)
and each label's continuation (``think.label_continuations``).

The score (one definition, :func:`label_scores`)
------------------------------------------------
A label's score is the log-likelihood of its continuation's tokens **up to and including the
first token that no other label's continuation has at that place** (:func:`scored_token_counts`).
Summing the whole continuation, as this module used to, ranks labels by their token count as
much as by the model's decision: every further token costs an untrained model about
log(vocabulary), and after the distinguishing token the rest of the label carries no
decision, only the model's certainty about spelling. With labels whose first tokens differ
(the embedded tokenizer: ``▁ALLOW``, ``▁ESCALATION``, ``▁DENY``, ``▁REFUSE``), the four scores
are the four first-token log-probabilities, and their softmax is the model's next-token
distribution restricted to the four labels: a classifier head over the language model. A
model that spreads its probability evenly gives the four labels equal scores, whatever their
lengths. The four scores, divided by a temperature and soft-maxed, are the decision's
probability distribution.

One pass (:class:`DecisionReadout`, :func:`decision_rows`)
---------------------------------------------------------
Every label is read from one row per request: the prompt, then the *decision tail*: the
decision prefix (``<final>判定:``), followed, only for labels that need more than one scored
token, by one extra segment per label path (prefix + the label's tokens before its last
scored one). Each tail segment sees the prompt and its own earlier tokens, nothing else
(a 4-D attention mask), with position ids that continue the prompt's, so its logits are
those of the probe alone. The training loop puts the SFT completion between the prompt and
the tail in the same row (hidden from the tail), so the four-class term costs the few tail
tokens instead of a second pass over the prompt, with the loss unchanged.

The same scoring is the training loss's four-class term and the evaluation's classifier, and
it works unchanged on the original, retrained and baked models. Framework-free (no kedro).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from so8t_kedro.labels import LABELS
from so8t_kedro.think import (
    DEFAULT_FORMAT,
    decision_prefix,
    label_continuations,
    render_decision_probe,
    render_prompt,
)


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


# --------------------------------------------------------------------------- the score


def scored_token_counts(continuations: Sequence[Sequence[int]]) -> list[int]:
    """Per label, how many leading tokens of its continuation its score counts: up to and
    including the first token at which it differs from every other label's continuation.

    The continuations are prefix-free (each ends with the newline), so such a token exists.
    """
    counts = []
    for j, own in enumerate(continuations):
        others = [c for i, c in enumerate(continuations) if i != j]
        count = 1
        while any(list(c[:count]) == list(own[:count]) for c in others):
            count += 1
        if count > len(own):
            raise ValueError(f"label continuation {list(own)} is a prefix of another label's")
        counts.append(count)
    return counts


def label_scores(token_log_probs: Sequence, continuations: Sequence[Sequence[int]]) -> list:
    """The four label scores from each label's per-token log-probabilities.

    ``token_log_probs[j]``: label j's continuation tokens' log-probabilities after the probe
    (numpy or torch; the last axis runs over the tokens, at least
    ``scored_token_counts(continuations)[j]`` of them, e.g. the whole continuation);
    ``continuations[j]``: that label's token ids. Returns, per label in ``LABELS`` order,
    the sum of its first scored tokens' log-probabilities (an array of the leading shape).
    The one definition of the score: the training loss, the evaluation and any other
    backend (llama.cpp) call it.
    """
    counts = scored_token_counts(continuations)
    return [log_probs[..., :count].sum(-1)
            for log_probs, count in zip(token_log_probs, counts, strict=True)]


# --------------------------------------------------------------------------- one pass


@dataclass(frozen=True)
class DecisionReadout:
    """The decision tail appended after a prompt, and where each label's scored tokens
    are read in it.

    ``tokens``: the tail's ids (its segments one after another); ``segment``: per tail
    token, its segment's index; ``offset``: per tail token, its position inside its segment
    (position ids continue the prompt's from there); ``reads[j]``: label j's
    (tail index whose logits predict the token, token id) pairs, one per scored token;
    ``continuations``: the labels' full continuation ids (for :func:`label_scores`).
    """

    tokens: tuple[int, ...]
    segment: tuple[int, ...]
    offset: tuple[int, ...]
    reads: tuple[tuple[tuple[int, int], ...], ...]
    continuations: tuple[tuple[int, ...], ...]

    @classmethod
    def build(cls, prefix_ids: Sequence[int],
              continuations: Sequence[Sequence[int]]) -> DecisionReadout:
        """The tail for ``prefix_ids`` (the decision prefix's tokens) and the labels'
        continuation ids: one segment for the prefix, plus one per label path longer than a
        token (a path that another path extends shares that path's segment)."""
        counts = scored_token_counts(continuations)
        paths = [tuple(c[: n - 1]) for c, n in zip(continuations, counts, strict=True)]
        # The fewest segments that hold every path: the longest paths, each once.
        kept = sorted({p for p in paths
                       if not any(len(q) > len(p) and q[: len(p)] == p for q in paths)},
                      key=lambda p: (-len(p), p))
        tokens, segment, offset, starts = [], [], [], []
        for s, path in enumerate(kept):
            starts.append(len(tokens))
            ids = [*prefix_ids, *path]
            tokens += ids
            segment += [s] * len(ids)
            offset += range(len(ids))
        reads = []
        for continuation, path, count in zip(continuations, paths, counts, strict=True):
            s = next(i for i, q in enumerate(kept) if q[: len(path)] == path)
            last_prefix = starts[s] + len(prefix_ids) - 1
            reads.append(tuple((last_prefix + k, continuation[k]) for k in range(count)))
        return cls(tuple(tokens), tuple(segment), tuple(offset), tuple(reads),
                   tuple(tuple(c) for c in continuations))

    def scores(self, tail_logits: torch.Tensor) -> torch.Tensor:
        """[N, 4] label scores from the logits at the tail's positions [N, len(tokens), V]
        (differentiable): log-softmax over the vocabulary where a label is read, then
        :func:`label_scores`."""
        per_label = []
        for reads in self.reads:
            where = torch.tensor([i for i, _ in reads], device=tail_logits.device)
            ids = torch.tensor([t for _, t in reads], device=tail_logits.device)
            log_probs = F.log_softmax(tail_logits[:, where].float(), dim=-1)
            per_label.append(log_probs[:, torch.arange(len(reads)), ids])
        return torch.stack(label_scores(per_label, self.continuations), dim=-1)


@dataclass(frozen=True)
class DecisionRows:
    """Left-padded rows (body, then the decision tail when there is one), all ending at the
    last position.

    ``token_mask`` [N, L] is 1 on the bodies' real tokens (not the padding, not the tail);
    ``position_ids`` count each body's tokens from 0 and continue each tail segment from its
    body's prompt; ``attend`` [N, 1, L, L] (bool, True = may attend) is the causal mask that
    hides padding, and hides from the tail all of the body but its prompt. Without a tail,
    ``attend`` is None and ``token_mask`` is the usual 2-D attention mask.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    token_mask: torch.Tensor
    attend: torch.Tensor | None
    tail_length: int

    def to(self, device: torch.device | str) -> DecisionRows:
        return DecisionRows(self.input_ids.to(device), self.position_ids.to(device),
                            self.token_mask.to(device),
                            None if self.attend is None else self.attend.to(device),
                            self.tail_length)

    def model_inputs(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """``input_ids``, ``position_ids`` and ``attention_mask`` for a Hugging Face causal LM:
        the 4-D mask as an additive float mask of ``dtype`` (what eager and SDPA attention
        both take), else the 2-D one."""
        mask = self.token_mask if self.attend is None else additive_mask(self.attend, dtype)
        return {"input_ids": self.input_ids, "position_ids": self.position_ids,
                "attention_mask": mask}


def additive_mask(attend: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean may-attend mask as the additive float mask of ``dtype`` that eager and SDPA
    attention both take (0 where allowed, the dtype's lowest value elsewhere)."""
    mask = torch.zeros(attend.shape, dtype=dtype, device=attend.device)
    return mask.masked_fill_(~attend, torch.finfo(dtype).min)


def float_dtype(model) -> torch.dtype:
    """The dtype a model computes in: its first floating-point parameter's (a quantised
    model also holds integer weights)."""
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


def decision_rows(bodies: Sequence[Sequence[int]], prompt_lengths: Sequence[int],
                  readout: DecisionReadout | None, pad_id: int) -> DecisionRows:
    """Rows of ``bodies`` (prompt + any completion), each followed by ``readout``'s tail
    (none when ``readout`` is None); the tail sees the first ``prompt_lengths[i]`` tokens of
    body i. See :class:`DecisionRows`."""
    tail = list(readout.tokens) if readout is not None else []
    length = max(len(body) for body in bodies) + len(tail)
    n = len(bodies)
    input_ids = torch.full((n, length), pad_id, dtype=torch.long)
    position_ids = torch.zeros((n, length), dtype=torch.long)
    token_mask = torch.zeros((n, length), dtype=torch.long)
    # Per position: -1 padding, 0 body, 1 + s tail segment s; and "seen by the tail".
    group = torch.full((n, length), -1, dtype=torch.long)
    visible_to_tail = torch.zeros((n, length), dtype=torch.bool)
    if readout is not None:
        segment = torch.tensor(readout.segment, dtype=torch.long) + 1
        offset = torch.tensor(readout.offset, dtype=torch.long)
    for i, (body, n_prompt) in enumerate(zip(bodies, prompt_lengths, strict=True)):
        start = length - len(tail) - len(body)
        body_end = start + len(body)
        input_ids[i, start:body_end] = torch.tensor(list(body), dtype=torch.long)
        position_ids[i, start:body_end] = torch.arange(len(body))
        token_mask[i, start:body_end] = 1
        group[i, start:body_end] = 0
        visible_to_tail[i, start : start + n_prompt] = True
        if tail:
            input_ids[i, body_end:] = torch.tensor(tail, dtype=torch.long)
            position_ids[i, body_end:] = n_prompt + offset
            group[i, body_end:] = segment
    if readout is None:
        return DecisionRows(input_ids, position_ids, token_mask, None, 0)
    query, key = group[:, :, None], group[:, None, :]
    causal = torch.ones((length, length), dtype=torch.bool).tril()
    same = (query == key) & (key >= 0)
    tail_sees_prompt = (query > 0) & visible_to_tail[:, None, :]
    # Padding attends to itself only, so that no softmax row is empty (no NaN).
    itself = torch.eye(length, dtype=torch.bool) & (query < 0)
    attend = ((same | tail_sees_prompt) & causal) | itself
    return DecisionRows(input_ids, position_ids, token_mask, attend[:, None], len(tail))


# --------------------------------------------------------------------------- the scorer


class FourClassScorer:
    """Builds decision rows for a tokenizer and scores them with any causal LM."""

    def __init__(self, tokenizer, fmt: str = DEFAULT_FORMAT, max_probe_tokens: int = 512):
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.max_probe_tokens = max_probe_tokens
        self.continuations = label_continuations()
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.prefix = decision_prefix(fmt)
        # The tail's ids do not depend on the request: every prompt ends with the same
        # "<|assistant|>\n". They are read off one rendered probe and checked per request.
        prompt = render_prompt("", "ja")
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        self.prefix_ids = continuation_ids(tokenizer, prompt_ids, prompt, self.prefix)
        probe = prompt + self.prefix
        self.readout = DecisionReadout.build(
            self.prefix_ids,
            [continuation_ids(tokenizer, prompt_ids + self.prefix_ids, probe,
                              self.continuations[label]) for label in LABELS])

    def encode(self, text: str, language: str) -> list[tuple[list[int], list[int]]]:
        """Per label (in ``LABELS`` order), (probe ids, continuation ids): the whole probe and
        the whole continuation, for a backend that evaluates them itself and scores the
        continuation's token log-probabilities with :func:`label_scores`.

        A probe longer than ``max_probe_tokens`` loses tokens from the left, keeping the
        decision position at its end.
        """
        probe = render_decision_probe(text, self.fmt, language)
        head = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
        return [(head[-self.max_probe_tokens:], continuation_ids(self.tokenizer, head, probe,
                                                                 self.continuations[label]))
                for label in LABELS]

    def prompt_ids(self, prompt: str) -> list[int]:
        """The ids of a rendered chat ``prompt``, checked to be followed by the decision
        prefix's ids in the probe (the tail is shared by every request)."""
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if continuation_ids(self.tokenizer, ids, prompt, self.prefix) != self.prefix_ids:
            raise ValueError(f"the decision prefix {self.prefix!r} tokenises differently "
                             f"after the prompt ending {prompt[-20:]!r}")
        return ids

    def batch(self, texts: Sequence[str], languages: Sequence[str]) -> DecisionRows:
        """The :class:`DecisionRows` of requests ``texts`` in ``languages``: each prompt (its
        last ``max_probe_tokens`` tokens with the tail) followed by the decision tail."""
        room = self.max_probe_tokens - len(self.readout.tokens)
        prompts = [self.prompt_ids(render_prompt(text, language))[-room:]
                   for text, language in zip(texts, languages, strict=True)]
        return decision_rows(prompts, [len(p) for p in prompts], self.readout, self.pad_id)

    def label_log_likelihoods(self, model, rows: DecisionRows) -> torch.Tensor:
        """[N, 4] label scores (:func:`label_scores`) of the requests in ``rows``
        (differentiable).

        Only the tail's logits are computed (``logits_to_keep``): the vocabulary projection of
        the whole prompt would cost more than the scoring.
        """
        logits = model(**rows.model_inputs(float_dtype(model)),
                       logits_to_keep=rows.tail_length).logits
        return self.readout.scores(logits)
