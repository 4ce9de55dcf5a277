"""SO8T regularisers: orthogonality of the gates, PET smoothness of hidden states, λ schedule."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from .gate import SO8RotationGate


def orthogonality_loss(
    gates: Mapping[int, SO8RotationGate] | Iterable[SO8RotationGate],
) -> torch.Tensor:
    """Mean over all 8×8 blocks of all gates of ‖R_bᵀR_b − I‖²_F (a float32 scalar).

    For ``parametrization="exp"`` and ``"cayley"`` this is ~0 (float32 rounding, ~1e-12)
    whatever θ is: both map a skew-symmetric A to SO(8) exactly, so the term has no gradient
    worth the name and only documents that R stays a rotation. It is a real regulariser
    for ``"taylor"``, whose truncated series is not orthogonal. (The original
    implementation computed it on a matrix that was orthogonal by construction, i.e. it was
    always ~0, and called it a regulariser.)

    Args:
        gates: the gates, e.g. ``list_gates(model)`` or ``list_gates(model).values()``.

    Returns:
        A scalar tensor connected to every θ; ``0.`` when there are no gates.
    """
    if isinstance(gates, Mapping):
        gates = gates.values()
    rotations = [gate.rotation(torch.float32) for gate in gates]
    if not rotations:
        return torch.zeros(())
    rot = torch.cat(rotations, dim=0)  # [sum of blocks, 8, 8]
    eye = torch.eye(rot.shape[-1], dtype=rot.dtype, device=rot.device)
    gram = rot.transpose(-1, -2) @ rot
    return (gram - eye).pow(2).sum(dim=(-1, -2)).mean()


def pet_loss(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """PET smoothness penalty on a hidden-state sequence (computed in float32).

    With Δ²h_t = h_{t+2} − 2h_{t+1} + h_t (t = 0 … T−3), and V the set of (sequence, t) for
    which positions t, t+1 and t+2 are all unmasked (``attention_mask == 1``)::

        pet = Σ_{(n,t) ∈ V} Σ_d (Δ²h_{n,t,d})²  /  (|V| · D)

    i.e. the mean of the squared second difference over valid triples and hidden dims.
    Padded positions never enter (values there, even inf/nan, do not matter). Returns 0
    (still connected to ``hidden``) when no triple is valid, e.g. T < 3.

    Args:
        hidden: ``[batch, seq, D]`` (e.g. the last hidden state).
        attention_mask: ``[batch, seq]``, 1 = real token, 0 = padding; ``None`` = all real.
    """
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [batch, seq, dim], got shape {tuple(hidden.shape)}")
    h = hidden.to(torch.float32)
    if h.shape[1] < 3:
        return h[:, :0].sum()  # 0., still part of the graph
    d2 = h[:, 2:] - 2.0 * h[:, 1:-1] + h[:, :-2]
    if attention_mask is None:
        return d2.pow(2).mean()
    if attention_mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} does not match "
            f"hidden's [batch, seq] {tuple(hidden.shape[:2])}"
        )
    mask = attention_mask.to(device=h.device).bool()
    valid = mask[:, 2:] & mask[:, 1:-1] & mask[:, :-2]
    if not bool(valid.any()):
        return h[:, :0].sum()
    return d2[valid].pow(2).mean()


@dataclass(frozen=True)
class PETSchedule:
    """Piecewise-constant PET weight λ over training progress p = step / total_steps.

    λ = values[k] where k is the number of boundaries ≤ p (``bisect_right``): with the
    defaults, p < 0.2 → 0.01, 0.2 ≤ p < 0.6 → 0.05, p ≥ 0.6 → 0.1. A boundary belongs to
    the phase it starts. ``step`` is the 0-based optimiser step; steps ≥ total_steps keep
    the last value.
    """

    boundaries: Sequence[float] = (0.2, 0.6)
    values: Sequence[float] = (0.01, 0.05, 0.1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "boundaries", tuple(float(b) for b in self.boundaries))
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(
                f"PETSchedule needs len(values) == len(boundaries) + 1, got "
                f"{len(self.values)} values for {len(self.boundaries)} boundaries"
            )
        if any(not 0.0 <= b <= 1.0 for b in self.boundaries) or any(
            b0 >= b1 for b0, b1 in zip(self.boundaries, self.boundaries[1:])
        ):
            raise ValueError(
                f"PETSchedule boundaries must be strictly increasing in [0, 1], "
                f"got {self.boundaries}"
            )

    def lambda_at(self, step: int, total_steps: int) -> float:
        """λ at 0-based optimiser ``step`` of ``total_steps``."""
        if total_steps <= 0:
            raise ValueError(f"total_steps must be > 0, got {total_steps}")
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        progress = step / total_steps
        return self.values[bisect.bisect_right(self.boundaries, progress)]

    __call__ = lambda_at
