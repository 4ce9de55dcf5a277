"""The SO(8) rotation gate layer (the analogue of PEFT's ``oft/layer.py``).

Conventions (see DESIGN.md, "SO8T math"):

* hidden size D = 8·B, parameters θ ∈ R^{B×8×8}, A_b = θ_b − θ_bᵀ (skew-symmetric);
* R_b = exp(A_b) (``torch.linalg.matrix_exp``), or the Cayley transform, or a truncated
  Taylor series;
* row-vector convention: x[..., D] is viewed as [..., B, 8] and y_b = x_b · R_b, i.e.
  y = x · blockdiag(R_0, …, R_{B−1}).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import INITS, PARAMETRIZATIONS

BLOCK = 8
# Blocks are applied G at a time as one (8G)×(8G) block-diagonal matrix (zeros off the 8×8
# diagonal blocks). Same result; 4× fewer, 4× larger batched matmuls, which on CPU makes
# the rotation ~25 % cheaper for D = 256 … 3072 (see benchmarks/so8t_overhead.py); the
# extra multiply-adds by zero (32 instead of 8 per element) are negligible next to D.
APPLY_GROUP = 4


def skew(theta: torch.Tensor) -> torch.Tensor:
    """A = θ − θᵀ over the last two dimensions."""
    return theta - theta.transpose(-1, -2)


def rotation_from_theta(
    theta: torch.Tensor, parametrization: str = "exp", taylor_order: int = 4
) -> torch.Tensor:
    """R[..., 8, 8] from θ[..., 8, 8], computed in θ's dtype (callers pick fp32 or fp64).

    * ``exp``: R = exp(A). Exactly in SO(8) (up to float error): exp of a skew-symmetric
      matrix is orthogonal with det = e^{tr A} = 1.
    * ``cayley``: R = (I − A)⁻¹(I + A), via ``torch.linalg.solve`` (I − A is always
      invertible for real skew-symmetric A). Exactly in SO(8), never reaches rotations
      with eigenvalue −1.
    * ``taylor``: R = Σ_{n=0}^{k} Aⁿ/n!, k = ``taylor_order``. Not orthogonal: the error
      RᵀR − I is O(‖A‖^{k+1}/(k+1)!), which is what the orthogonality regulariser can
      push down.
    """
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(
            f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}"
        )
    a = skew(theta)
    if parametrization == "exp":
        return torch.linalg.matrix_exp(a)
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
    if parametrization == "cayley":
        return torch.linalg.solve(eye - a, eye + a)
    if taylor_order < 1:
        raise ValueError(f"taylor_order must be >= 1, got {taylor_order}")
    result = eye + a
    term = a
    for n in range(2, taylor_order + 1):
        term = term @ a / n
        result = result + term
    return result


def group_blocks(rot: torch.Tensor, group: int) -> torch.Tensor:
    """[B, 8, 8] -> [B/G, 8G, 8G]: each G consecutive blocks as one block-diagonal matrix."""
    if group == 1:
        return rot
    n_blocks, size = rot.shape[0], rot.shape[-1]
    eye = torch.eye(group, dtype=rot.dtype, device=rot.device)
    grouped = torch.einsum("ab,gaij->gaibj", eye, rot.reshape(n_blocks // group, group, size, size))
    return grouped.reshape(n_blocks // group, group * size, group * size)


class SO8RotationGate(nn.Module):
    """Learnable block-diagonal SO(8) rotation: y = x · blockdiag(R_0, …, R_{B−1}).

    Args:
        hidden_size: D, the size of the last dimension of the input; must be a multiple of 8.
        init: ``"normal"`` (θ ~ N(0, init_scale²)) or ``"zeros"`` (identity rotation).
        init_scale: standard deviation of the normal initialisation.
        parametrization: ``"exp"`` | ``"cayley"`` | ``"taylor"`` (see
            :func:`rotation_from_theta`).
        taylor_order: order of the truncated series for ``"taylor"``.
        generator: optional ``torch.Generator`` for the initialisation (drawn on the CPU, then
            moved to ``device``).
        device: where θ lives.

    θ is always stored in float32 and R is always computed in float32 (or float64 when asked,
    for baking). The input may be float32, bfloat16 or float16: it is rotated in float32 and
    the result is cast back to the input dtype. Measured on bf16/fp16 activations this is as
    accurate as a single rounding of the exact result, whereas rotating in the input dtype
    (R cast to bf16/fp16) has a ~1.4× larger RMS error (see tests/so8t/test_gate.py).
    """

    def __init__(
        self,
        hidden_size: int,
        *,
        init: str = "normal",
        init_scale: float = 0.05,
        parametrization: str = "exp",
        taylor_order: int = 4,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if hidden_size <= 0 or hidden_size % BLOCK != 0:
            raise ValueError(
                f"SO8RotationGate needs a hidden size D that is a positive multiple of 8, "
                f"got D={hidden_size}"
            )
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(
                f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}"
            )
        self.hidden_size = hidden_size
        self.num_blocks = hidden_size // BLOCK
        self.apply_group = next(g for g in (APPLY_GROUP, 2, 1) if self.num_blocks % g == 0)
        self.parametrization = parametrization
        self.taylor_order = int(taylor_order)
        self.init = init
        self.init_scale = float(init_scale)
        self.theta = nn.Parameter(
            torch.empty(self.num_blocks, BLOCK, BLOCK, dtype=torch.float32, device=device)
        )
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-draw θ according to ``init`` / ``init_scale``."""
        if self.init == "zeros" or self.init_scale == 0:
            self.theta.zero_()
            return
        values = torch.randn(self.theta.shape, generator=generator, dtype=torch.float32)
        self.theta.copy_(values * self.init_scale)

    def rotation(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """R[B, 8, 8], computed from θ in ``dtype`` (float32 for the forward, float64 to bake)."""
        return rotation_from_theta(self.theta.to(dtype), self.parametrization, self.taylor_order)

    def block_diagonal(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The full D×D matrix blockdiag(R_0, …, R_{B−1}) (for tests and inspection only)."""
        return torch.block_diag(*self.rotation(dtype).unbind(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.hidden_size:
            raise ValueError(
                f"SO8RotationGate expects last dimension {self.hidden_size}, got {x.shape[-1]}"
            )
        rot = group_blocks(self.rotation(torch.float32), self.apply_group)
        xb = x.to(torch.float32).reshape(*x.shape[:-1], rot.shape[0], rot.shape[-1])
        y = torch.einsum("...bi,bij->...bj", xb, rot)
        return y.reshape(x.shape).to(x.dtype)

    def extra_repr(self) -> str:
        extra = f", taylor_order={self.taylor_order}" if self.parametrization == "taylor" else ""
        return (
            f"hidden_size={self.hidden_size}, blocks={self.num_blocks}, "
            f"parametrization={self.parametrization!r}{extra}"
        )
