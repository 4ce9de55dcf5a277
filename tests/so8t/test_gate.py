"""SO8RotationGate: the math of R and of the rotation itself."""

from __future__ import annotations

import itertools

import pytest
import torch

from so8t_kedro.so8t import SO8RotationGate, SO8TConfig, orthogonality_loss, rotation_from_theta
from tests.helpers.tolerances import accumulation_bound, rotation_exp_bound

SCALES = [0.05, 0.3, 1.0, 3.0]


def _gate(theta: torch.Tensor, parametrization: str = "exp", **kwargs) -> SO8RotationGate:
    gate = SO8RotationGate(theta.shape[0] * 8, parametrization=parametrization, **kwargs)
    with torch.no_grad():
        gate.theta.copy_(theta)
    return gate


def _theta(scale: float, blocks: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(blocks, 8, 8, generator=torch.Generator().manual_seed(seed)) * scale


def _rotation_bound(theta: torch.Tensor, parametrization: str) -> float:
    """Entrywise error bound of R = f(A), A = θ − θᵀ, in float32. exp: scaling and squaring
    (see rotation_exp_bound). Cayley: a linear solve with I − A, backward stable, so the
    error is γ_3n (LU and two triangular solves of n terms) times the condition number of
    I − A, which for skew-symmetric A is sqrt(1 + σ_max(A)²)."""
    skew = theta - theta.transpose(-1, -2)
    if parametrization == "exp":
        return rotation_exp_bound(torch.float32, skew)
    condition = (1 + torch.linalg.matrix_norm(skew.double(), ord=2).amax().item() ** 2) ** 0.5
    return condition * accumulation_bound(torch.float32, 3 * 8, 8**0.5)


@pytest.mark.parametrize("parametrization", ["exp", "cayley"])
@pytest.mark.parametrize("scale", SCALES)
def test_rotation_is_special_orthogonal(parametrization, scale):
    theta = _theta(scale)
    rot = _gate(theta, parametrization).rotation()
    assert rot.dtype == torch.float32
    eye = torch.eye(8).expand_as(rot)
    # RᵀR − I for R = Q + E (Q exact): |QᵀE + EᵀQ| <= 2·√8·|E| per entry, plus the product's
    # own rounding (8 terms of size <= 1, row sums <= √8); det(I + F) − 1 ≈ trace F.
    tol = 2 * 8**0.5 * _rotation_bound(theta, parametrization) + accumulation_bound(
        torch.float32, 8, 8**0.5)
    assert torch.allclose(rot.transpose(-1, -2) @ rot, eye, rtol=0, atol=tol)
    assert torch.allclose(rot @ rot.transpose(-1, -2), eye, rtol=0, atol=tol)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(rot.shape[0]), rtol=0,
                          atol=8 * tol + accumulation_bound(torch.float32, 8**3))


@pytest.mark.parametrize("scale", [0.05, 0.3, 1.0])
def test_exp_matches_float64_reference(scale):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    theta = _theta(scale, seed=1)
    rot = _gate(theta).rotation()
    a = (theta.double() - theta.double().transpose(-1, -2)).numpy()
    ref = torch.stack([torch.from_numpy(scipy_linalg.expm(block)) for block in a])
    # float32's bound for this θ (1.2e-6 measured at scale 1.0 on one CPU, 0.9e-6 on another)
    assert (rot.double() - ref).abs().max().item() <= _rotation_bound(theta, "exp")
    # and the float64 path used for baking is exact to double precision
    rot64 = _gate(theta).rotation(torch.float64)
    assert (rot64 - ref).abs().max().item() < 1e-12


def test_cayley_matches_explicit_formula():
    theta = _theta(0.5, seed=2).double()
    a = theta - theta.transpose(-1, -2)
    eye = torch.eye(8, dtype=torch.float64)
    ref = torch.linalg.inv(eye - a) @ (eye + a)
    assert torch.allclose(rotation_from_theta(theta, "cayley"), ref, atol=1e-12)


def test_taylor_is_not_orthogonal_and_improves_with_order():
    theta = _theta(0.3, seed=3)
    losses = []
    for order in (1, 2, 3, 4, 6):
        gate = _gate(theta, "taylor", taylor_order=order)
        losses.append(orthogonality_loss([gate]).item())
    assert all(loss > 0 for loss in losses)
    assert all(a > b for a, b in itertools.pairwise(losses)), losses
    assert losses[0] > 1e-2  # order 1 (I + A) is far from orthogonal at this scale
    # exp / cayley: ~0 up to float error for the same θ
    for parametrization in ("exp", "cayley"):
        assert orthogonality_loss([_gate(theta, parametrization)]).item() < 1e-10
    # taylor converges to exp
    exp_rot = _gate(theta).rotation(torch.float64)
    taylor_rot = _gate(theta, "taylor", taylor_order=30).rotation(torch.float64)
    assert torch.allclose(exp_rot, taylor_rot, atol=1e-10)


@pytest.mark.parametrize("parametrization", ["exp", "cayley", "taylor"])
def test_zero_theta_is_identity(parametrization):
    gate = SO8RotationGate(64, init="zeros", parametrization=parametrization)
    assert torch.equal(gate.rotation(), torch.eye(8).expand(8, 8, 8))
    x = torch.randn(3, 5, 64)
    assert torch.equal(gate(x), x)


@pytest.mark.parametrize("parametrization", ["exp", "cayley", "taylor"])
@pytest.mark.parametrize("blocks", [1, 2, 3, 4, 6, 12])  # every grouping path (G = 1, 2, 4)
def test_row_vector_convention_against_block_diagonal_matrix(parametrization, blocks):
    gate = _gate(_theta(0.7, blocks=blocks, seed=4), parametrization)
    x = torch.randn(2, 7, 8 * blocks, generator=torch.Generator().manual_seed(5))
    rot = gate.rotation()
    full = torch.block_diag(*rot.unbind(0))
    assert torch.allclose(gate.block_diagonal(), full)
    expected = x @ full
    # Both sides are 8-term dot products of x with R's columns (the zeros of the block
    # diagonal add nothing); each is within γ_8·Σ|x_k||R_kj| <= γ_8·max|x|·√8 of exact.
    tol = 2 * accumulation_bound(torch.float32, 8, x.abs().max().item() * 8**0.5)
    assert torch.allclose(gate(x), expected, rtol=0, atol=tol)
    # the column-vector convention (x·Rᵀ) is a different map: the test can tell them apart
    assert not torch.allclose(gate(x), x @ full.T, atol=1e-3)


def test_init_normal_scale_and_seed():
    gen = torch.Generator().manual_seed(0)
    gate = SO8RotationGate(8 * 256, init="normal", init_scale=0.05, generator=gen)
    assert gate.theta.dtype == torch.float32 and gate.theta.requires_grad
    assert abs(gate.theta.std().item() - 0.05) < 0.002
    assert abs(gate.theta.mean().item()) < 0.002
    again = SO8RotationGate(8 * 256, generator=torch.Generator().manual_seed(0))
    assert torch.equal(gate.theta, again.theta)
    assert torch.count_nonzero(SO8RotationGate(64, init="zeros").theta) == 0


@pytest.mark.parametrize("hidden", [0, 7, 12, 65, 3 * 8 + 4])
def test_hidden_size_not_multiple_of_8_raises(hidden):
    with pytest.raises(ValueError, match=f"D={hidden}"):
        SO8RotationGate(hidden)


def test_wrong_input_width_raises():
    with pytest.raises(ValueError, match="last dimension 64"):
        SO8RotationGate(64)(torch.randn(2, 32))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs(dtype):
    gate = _gate(_theta(0.3, blocks=32, seed=6))
    x32 = torch.randn(16, 10, 256, generator=torch.Generator().manual_seed(7))
    x = x32.to(dtype)
    y = gate(x)
    assert y.dtype == dtype
    ref = gate(x.float())  # same (rounded) input, exact fp32 rotation
    tol = 2**-7 if dtype == torch.bfloat16 else 2**-10
    assert torch.allclose(y.float(), ref, rtol=tol, atol=tol * 4)
    # the implementation's choice (rotate in fp32, cast back once) is at least as accurate as
    # rotating in the input dtype with R rounded to it
    rot = gate.rotation()
    in_dtype = torch.einsum("...bi,bij->...bj", x.reshape(16, 10, 32, 8), rot.to(dtype))
    err_impl = (y.double() - ref.double()).pow(2).mean().sqrt()
    err_in_dtype = (in_dtype.reshape(16, 10, 256).double() - ref.double()).pow(2).mean().sqrt()
    assert err_impl <= err_in_dtype


def test_gradients_reach_theta_through_every_parametrization():
    for parametrization in ("exp", "cayley", "taylor"):
        gate = _gate(_theta(0.2, blocks=2, seed=8), parametrization)
        gate(torch.randn(4, 16)).pow(2).sum().backward()
        assert gate.theta.grad is not None and gate.theta.grad.abs().sum() > 0


def test_config_round_trip_and_validation():
    config = SO8TConfig(
        layer_indices=[2, 0],
        init_scale=0.1,
        init="zeros",
        parametrization="taylor",
        taylor_order=6,
        seed=None,
    )
    assert config.layer_indices == [0, 2]
    assert SO8TConfig.from_dict(config.to_dict()) == config
    assert SO8TConfig.from_dict(SO8TConfig().to_dict()) == SO8TConfig()
    with pytest.raises(ValueError, match="unknown"):
        SO8TConfig.from_dict({"layer_idx": [0]})
    for bad in (
        {"parametrization": "svd"},
        {"init": "uniform"},
        {"layer_indices": [1, 1]},
        {"layer_indices": [-1]},
        {"taylor_order": 0},
        {"init_scale": -1.0},
    ):
        with pytest.raises(ValueError):
            SO8TConfig(**bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_matches_cpu(dtype):
    gate = _gate(_theta(0.3, blocks=32, seed=9))
    x = torch.randn(4, 9, 256, generator=torch.Generator().manual_seed(10)).to(dtype)
    expected = gate(x)
    gate_cuda = gate.to("cuda")
    y = gate_cuda(x.to("cuda"))
    assert y.device.type == "cuda" and y.dtype == dtype and gate_cuda.theta.dtype == torch.float32
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert torch.allclose(y.cpu().float(), expected.float(), atol=tol, rtol=tol)
