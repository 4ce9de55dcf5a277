"""Configuration of SO8T rotation gates (the analogue of PEFT's ``OFTConfig``).

Kept free of torch so that pipelines can validate parameters without building a model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

INITS = ("normal", "zeros")
PARAMETRIZATIONS = ("exp", "cayley", "taylor")


@dataclass
class SO8TConfig:
    """Where SO(8) rotation gates go and how they are parametrised.

    Attributes:
        layer_indices: decoder layers that get a gate on their attention output (after
            ``o_proj``); ``None`` means every layer. Indices are 0-based and must exist in
            the model the gates are installed into.
        init_scale: standard deviation of θ when ``init == "normal"``.
        init: ``"normal"`` (θ ~ N(0, init_scale²)) or ``"zeros"`` (θ = 0, so R = I and the
            gated model starts exactly equal to the base model).
        parametrization: how R is computed from A = θ − θᵀ: ``"exp"`` (R = exp(A),
            ``torch.linalg.matrix_exp``), ``"cayley"`` (R = (I − A)⁻¹(I + A)) — both exactly
            in SO(8) — or ``"taylor"`` (exp(A) truncated after the A^k/k! term, k =
            ``taylor_order``; cheap but only approximately orthogonal).
        taylor_order: order k of the truncated series (used by ``"taylor"`` only).
        seed: seed of the generator that draws the initial θ (layer by layer, in index
            order, on the CPU, so initialisation does not depend on the device); ``None``
            draws from torch's global generator.
    """

    layer_indices: list[int] | None = None
    init_scale: float = 0.05
    init: str = "normal"
    parametrization: str = "exp"
    taylor_order: int = 4
    seed: int | None = 0

    def __post_init__(self) -> None:
        if self.layer_indices is not None:
            indices = [int(i) for i in self.layer_indices]
            if any(i < 0 for i in indices):
                raise ValueError(f"layer_indices must be >= 0, got {self.layer_indices}")
            if len(set(indices)) != len(indices):
                raise ValueError(f"layer_indices contains duplicates: {self.layer_indices}")
            self.layer_indices = sorted(indices)
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.parametrization not in PARAMETRIZATIONS:
            raise ValueError(
                f"parametrization must be one of {PARAMETRIZATIONS}, got {self.parametrization!r}"
            )
        if not self.init_scale >= 0:
            raise ValueError(f"init_scale must be >= 0, got {self.init_scale}")
        if int(self.taylor_order) < 1:
            raise ValueError(f"taylor_order must be >= 1, got {self.taylor_order}")
        self.taylor_order = int(self.taylor_order)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the user-facing fields."""
        data = dataclasses.asdict(self)
        if data["layer_indices"] is not None:
            data["layer_indices"] = list(data["layer_indices"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SO8TConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (typos must not pass silently)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SO8TConfig keys: {sorted(unknown)} (known: {sorted(known)})")
        return cls(**data)
