"""Float tolerances derived from the dtype and the size of the computation.

A tolerance measured on one CPU holds for that CPU's kernels; another CPU's BLAS blocks and
vectorises the same sums in another order and lands elsewhere inside the rounding bound. The
bound itself does not move: a sum or dot product of ``n`` terms computed with unit roundoff
``u = eps / 2`` is within ``γ_n = n·u / (1 − n·u)`` of the exact value, relative to the sum
of the terms' absolute values (Higham, *Accuracy and Stability of Numerical Algorithms*,
2nd ed., §3.1, eq. 3.5). Every bound here is built from that, with the operation counts
stated where it is used; the tests still fail on a wrong formula, which is off by far more.
"""

from __future__ import annotations

import math

import torch

# torch.linalg.matrix_exp: Padé degree 13 after scaling A by 2^-s so that ||A / 2^s||_1 <= θ13
# (Higham 2005, "The scaling and squaring method for the matrix exponential revisited").
_THETA_13 = 5.371920351148152
_PADE_13_PRODUCTS = 6  # matrix products in the degree-13 evaluation (A², A⁴, A⁶, U, V, ...)


def unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def accumulation_bound(dtype: torch.dtype, terms: int, magnitude: float = 1.0) -> float:
    """γ_terms · magnitude: the largest error of a sum or dot product of ``terms`` rounded
    terms whose absolute values add up to ``magnitude``."""
    nu = terms * unit_roundoff(dtype)
    if nu >= 1:
        raise ValueError(f"{terms} terms exceed what {dtype} can bound (n·u = {nu:.3g})")
    return nu / (1 - nu) * magnitude


def rotation_exp_bound(dtype: torch.dtype, skew: torch.Tensor) -> float:
    """Bound on |matrix_exp(A) − exp(A)| entrywise for skew-symmetric n×n blocks ``skew``
    (whose exponentials are rotations, entries in [−1, 1]) computed in ``dtype``.

    After scaling by 2^-s, the Padé evaluation's products have entries of size up to
    e^(θ13/2) (the rational function's numerator and denominator); each of its products and
    each of the s squarings of a rotation adds γ_n times the row's absolute sum (at most
    √n for a rotation), and a squaring doubles the error it is given."""
    n = skew.shape[-1]
    norm_1 = skew.abs().sum(-2).amax().item()
    squarings = max(0, math.ceil(math.log2(norm_1 / _THETA_13))) if norm_1 > 0 else 0
    pade = _PADE_13_PRODUCTS * accumulation_bound(dtype, n, math.exp(_THETA_13 / 2))
    squaring = accumulation_bound(dtype, n, math.sqrt(n))
    return 2**squarings * (pade + squaring)


def forward_bound(dtype: torch.dtype, config, logits: torch.Tensor) -> float:
    """Largest logit difference between two evaluations of one decoder in ``dtype`` that
    differ only in how their sums are grouped (a rotation folded into a weight, a LoRA
    merged, another kernel): along the path to a logit, each layer sums over the hidden
    size twice (attention output, the next projection) and over the MLP width once, and the
    head over the hidden size. The sums' absolute terms are taken as the logits' size times
    √hidden (random-sign terms of a dot product add up to about 1/√n of their absolute sum).
    """
    terms = config.num_hidden_layers * (2 * config.hidden_size + config.intermediate_size) \
        + config.hidden_size
    magnitude = logits.abs().max().item() * math.sqrt(config.hidden_size)
    return accumulation_bound(dtype, terms, magnitude)


def rounded_operands_bound(unit: float, config, max_abs_logit: float) -> float:
    """Largest logit difference when every matrix product along the path to a logit rounds
    both operands to a format with relative rounding ``unit`` and sums in float32 or wider:
    F16 weights with activations converted to F16 (llama.cpp's F16 path: ``unit =
    unit_roundoff(torch.float16)``), or products computed in bf16 (``unit_roundoff(
    torch.bfloat16)``). Each product ``w·x`` then carries at most ``2·unit`` of its terms'
    absolute sum, and to first order the errors of the path's ``4·layers + 1`` products
    (qkv, o, gate_up and down per layer; the head) add up. Terms' absolute sums are taken
    as in :func:`forward_bound`. The float32 accumulation adds :func:`forward_bound`, far
    below this for a 16-bit ``unit``."""
    products = 4 * config.num_hidden_layers + 1
    magnitude = max_abs_logit * math.sqrt(config.hidden_size)
    return products * 2 * unit * magnitude


def softmax_shift_bound(score_bound: float, temperature: float = 1.0) -> float:
    """Largest change of any softmax probability when every score moves by at most
    ``score_bound``: ∂p_i/∂s_j = (δ_ij p_i − p_i p_j) / T, and Σ_j |∂p_i/∂s_j| =
    2·p_i·(1 − p_i) / T ≤ 1 / (2T)."""
    return score_bound / (2 * temperature)


def max_abs_logit(model) -> float:
    """An upper bound on any logit a Phi-3 model can produce: the final RMSNorm's output has
    Euclidean norm √hidden · max|γ| at most (x / rms(x) has norm √hidden), so by
    Cauchy–Schwarz no logit exceeds that times the largest row norm of the head."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    gamma = base.model.norm.weight.detach().abs().max().item()
    head_rows = base.lm_head.weight.detach().float().norm(dim=-1).max().item()
    return math.sqrt(base.config.hidden_size) * gamma * head_rows


# A GGUF file's logits differ from the fp32 Hugging Face model's in two parts:
# * the file's own rounding or quantisation (F16 weights, activations converted to F16 for
#   the products; Q8_0 / Q4_K_M blocks, whose int8 x int8 (Q5_0 / Q4_K x Q8) products ggml
#   sums exactly in int32). It is the same on every CPU: a property of the file and the
#   input. The limits are its measured maxima on the tests' tiny model (513 positions,
#   logits -3.4..3.5), doubled: F16 9.0e-4, Q8_0 2.0e-2, Q4_K_M 7.7e-2 (mean 1.0e-4, 2.4e-3,
#   7.1e-3). F16 also has the a-priori rounded_operands_bound, far looser: a missing
#   LongRoPE factor (3.2e-2) passes it.
# * float32 accumulation, whose order each CPU's kernels choose: forward_bound.
GGUF_FILE_LIMITS = {"F16": 2 * 9.0e-4, "Q8_0": 4e-2, "Q4_K_M": 0.15}


def gguf_logit_bound(outtype: str, config, max_abs_logit: float) -> float:
    """A GGUF file's largest logit difference from the fp32 model on any CPU: the file's own
    limit plus the float32 accumulation any CPU may add."""
    return GGUF_FILE_LIMITS[outtype] + forward_bound(torch.float32, config,
                                                     torch.tensor(max_abs_logit))
