"""PET loss, its λ schedule, and the orthogonality loss."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from so8t_kedro.so8t import (
    PETSchedule,
    SO8RotationGate,
    SO8TConfig,
    install_gates,
    list_gates,
    orthogonality_loss,
    pet_loss,
)
from so8t_kedro.so8t.gate import skew
from tests.helpers.tolerances import accumulation_bound, rotation_exp_bound

# --------------------------------------------------------------------------- PET


def _sequence(values: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """h[n, t, :] = values[t] · c."""
    return values.view(1, -1, 1) * c.view(1, 1, -1)


def test_pet_of_linear_sequence_is_zero():
    t = torch.arange(10, dtype=torch.float32)
    h = _sequence(3.0 * t - 2.0, torch.randn(16)) + torch.randn(1, 1, 16)  # a + b·t
    # Exactly zero in real numbers; in float32 each h is rounded twice (product, sum) and
    # h[t+2] − 2h[t+1] + h[t] twice more, on terms whose absolute values add up to 4·max|h|.
    # The loss is a mean of squares of such differences.
    tol = accumulation_bound(torch.float32, 4, 4 * h.abs().max().item()) ** 2
    assert pet_loss(h).item() == pytest.approx(0.0, abs=tol)
    assert pet_loss(h, torch.ones(1, 10)).item() == pytest.approx(0.0, abs=tol)


def test_pet_of_quadratic_sequence_is_known_value():
    c = torch.tensor([1.0, -2.0, 0.5, 3.0])
    h = _sequence(torch.arange(9, dtype=torch.float32) ** 2, c).repeat(2, 1, 1)
    # Δ²(t²) = 2 everywhere, so Δ²h = 2c and the loss is mean_d (2 c_d)² = 4·mean(c²)
    expected = 4.0 * c.pow(2).mean().item()
    # h holds integers times c (exact), so Δ²h = 2c exactly; only the mean of the 2·7·4
    # positive squares is rounded: relative error within γ_(56 + 1).
    rel = accumulation_bound(torch.float32, 2 * 7 * 4 + 1)
    assert pet_loss(h).item() == pytest.approx(expected, rel=rel)
    assert pet_loss(h, torch.ones(2, 9)).item() == pytest.approx(expected, rel=rel)


def test_pet_masking_ignores_padding_and_counts_valid_triples_only():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(1, 6, 8, generator=gen)
    # left padding (3) on one sequence, right padding (2) on the other
    padded = torch.full((2, 9, 8), 1e6)
    padded[0, 3:] = real[0]
    padded[1, :6] = real[0]
    padded[0, 0, 0] = float("nan")
    padded[1, 8, 1] = float("inf")
    mask = torch.zeros(2, 9, dtype=torch.long)
    mask[0, 3:] = 1
    mask[1, :6] = 1
    reference = pet_loss(real)  # the 6 real positions, no mask
    got = pet_loss(padded, mask)
    assert torch.isfinite(got)
    # Both sides square the same differences (the padded copy is exact) and differ only in
    # how they sum the 2·4·8 positive squares: relative error within γ_(64 + 1) each.
    rel = 2 * accumulation_bound(torch.float32, 2 * 4 * 8 + 1)
    assert got.item() == pytest.approx(reference.item(), rel=rel)
    # explicit normalisation: sum over the 4 valid triples per sequence, / (|V| · D)
    d2 = real[0, 2:] - 2 * real[0, 1:-1] + real[0, :-2]
    assert got.item() == pytest.approx((2 * d2.pow(2).sum() / (8 * 8)).item(), rel=rel)
    # a hole in the middle removes the three triples that touch it
    holed = mask.clone()
    holed[1, 2] = 0
    d2_kept = torch.cat([d2, d2[3:]])  # seq 1 keeps only the triple (3, 4, 5)
    assert pet_loss(padded, holed).item() == pytest.approx(d2_kept.pow(2).mean().item(), rel=rel)


def test_pet_degenerate_cases_and_gradient():
    h = torch.randn(2, 2, 8, requires_grad=True)
    assert pet_loss(h).item() == 0.0
    h3 = torch.randn(2, 5, 8, requires_grad=True)
    zero = pet_loss(h3, torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 1, 1]]))
    assert zero.item() == 0.0
    zero.backward()
    loss = pet_loss(h3, torch.ones(2, 5))
    loss.backward()
    assert h3.grad.abs().sum() > 0
    half = pet_loss(torch.randn(1, 6, 8).to(torch.bfloat16))
    assert half.dtype == torch.float32
    with pytest.raises(ValueError):
        pet_loss(torch.randn(6, 8))
    with pytest.raises(ValueError):
        pet_loss(torch.randn(2, 6, 8), torch.ones(2, 5))


# --------------------------------------------------------------------------- schedule


@pytest.mark.parametrize("total", [10, 100, 1000, 37, 3])
def test_default_schedule_boundaries(total):
    at = PETSchedule().lambda_at

    def reference(step):  # exact rational semantics: p < 1/5 → 0.01, p < 3/5 → 0.05, else 0.1
        p = Fraction(step, total)
        return 0.01 if p < Fraction(1, 5) else 0.05 if p < Fraction(3, 5) else 0.1

    assert [at(s, total) for s in range(total + 3)] == [reference(s) for s in range(total + 3)]
    first_mid = next(s for s in range(total + 1) if Fraction(s, total) >= Fraction(1, 5))
    first_last = next(s for s in range(total + 1) if Fraction(s, total) >= Fraction(3, 5))
    assert at(0, total) == 0.01
    if first_mid > 0:
        assert at(first_mid - 1, total) == 0.01
    assert at(first_mid, total) == (0.05 if first_mid < first_last else 0.1)
    assert at(first_last, total) == 0.1
    assert at(total - 1, total) == 0.1
    assert at(total + 5, total) == 0.1  # past the end keeps the last value
    if total % 5 == 0:  # 0.2T and 0.6T are steps: a boundary starts its phase
        assert (at(total // 5 - 1, total), at(total // 5, total)) == (0.01, 0.05)
        assert (at(3 * total // 5 - 1, total), at(3 * total // 5, total)) == (0.05, 0.1)


def test_schedule_exact_table_for_t10():
    lambdas = [PETSchedule()(step, 10) for step in range(10)]
    assert lambdas == [0.01, 0.01, 0.05, 0.05, 0.05, 0.05, 0.1, 0.1, 0.1, 0.1]


def test_custom_schedule_and_validation():
    schedule = PETSchedule(boundaries=(0.5,), values=(1.0, 2.0))
    assert [schedule.lambda_at(s, 4) for s in range(4)] == [1.0, 1.0, 2.0, 2.0]
    three = PETSchedule(boundaries=[0.1, 0.5, 0.9], values=[0.0, 0.2, 0.4, 0.8])
    assert [three(s, 10) for s in (0, 1, 4, 5, 8, 9)] == [0.0, 0.2, 0.2, 0.4, 0.4, 0.8]
    assert PETSchedule(boundaries=(), values=(0.3,))(5, 10) == 0.3
    for bad in ({"boundaries": (0.6, 0.2)}, {"values": (0.1, 0.2)}, {"boundaries": (0.2, 1.5)}):
        with pytest.raises(ValueError):
            PETSchedule(**bad)
    with pytest.raises(ValueError):
        PETSchedule().lambda_at(0, 0)
    with pytest.raises(ValueError):
        PETSchedule().lambda_at(-1, 10)


# --------------------------------------------------------------------------- orthogonality


def test_orthogonality_loss_on_model_gates(tiny_phi3):
    install_gates(tiny_phi3, SO8TConfig(init_scale=1.0))
    gates = list_gates(tiny_phi3)
    loss = orthogonality_loss(gates)
    # exp of a skew-symmetric matrix is exactly orthogonal; float32 leaves each entry of R
    # within b (rotation_exp_bound) of it, so each entry of RᵀR − I is within 2·√8·b + 8·b²
    # (a rotation's column has absolute sum ≤ √8) plus the product's own γ_8 (Σ|R_ki||R_kj| ≤ 1),
    # and the loss sums 64 such squares per block.
    b = max(rotation_exp_bound(torch.float32, skew(gate.theta.detach())) for gate in gates.values())
    entry = 2 * 8**0.5 * b + 8 * b**2 + accumulation_bound(torch.float32, 8)
    assert loss.item() <= 64 * entry**2
    assert orthogonality_loss(gates.values()).item() == loss.item()
    assert orthogonality_loss([]).item() == 0.0


def test_orthogonality_loss_is_a_real_regulariser_for_taylor():
    gate = SO8RotationGate(
        32,
        init_scale=0.15,
        parametrization="taylor",
        taylor_order=2,
        generator=torch.Generator().manual_seed(0),
    )
    before = orthogonality_loss([gate])
    assert before.item() > 1e-3
    before.backward()
    assert gate.theta.grad.abs().sum() > 0
    optimizer = torch.optim.SGD([gate.theta], lr=0.1)
    for _ in range(20):
        optimizer.zero_grad()
        loss = orthogonality_loss([gate])
        loss.backward()
        optimizer.step()
    assert orthogonality_loss([gate]).item() < 0.5 * before.item()


def test_orthogonality_loss_is_mean_over_blocks():
    gate = SO8RotationGate(16, init="zeros", parametrization="taylor", taylor_order=1)
    with torch.no_grad():
        gate.theta[0, 0, 1] = 0.5  # A[0,1] = 0.5, A[1,0] = -0.5; other block: identity
    # R = I + A for block 0: RᵀR − I = AᵀA = diag(0.25, 0.25, 0, …): ‖·‖²_F = 0.125
    assert orthogonality_loss([gate]).item() == pytest.approx(0.125 / 2)
