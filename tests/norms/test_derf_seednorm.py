"""Derf and SeeDNorm against references written from their papers' formulas."""

from __future__ import annotations

import math

import pytest
import torch
from tests.norms.helpers import F64, perturbed

from normlab import make_norm


def erf_reference(v: float) -> float:
    return math.erf(v)


# --- Derf -----------------------------------------------------------------------------------


def test_derf_init_is_the_official_one():
    norm = make_norm("derf", 8)
    assert norm.alpha.shape == norm.shift.shape == ()
    assert norm.alpha.item() == 0.5 and norm.shift.item() == 0.0
    assert torch.equal(norm.weight, torch.ones(8)) and torch.equal(norm.bias, torch.zeros(8))
    custom = make_norm("derf", 8, alpha_init=1.0, shift_init=0.25)
    assert custom.alpha.item() == 1.0 and custom.shift.item() == 0.25
    for bad in ({"alpha_init": float("inf")}, {"shift_init": float("nan")}):
        with pytest.raises(ValueError, match="must be a finite number"):
            make_norm("derf", 8, **bad)


@pytest.mark.parametrize("kw", [{}, {"bias": False}, {"affine": False}])
def test_derf_matches_formula(kw):
    norm = perturbed("derf", 6, **kw)
    x = 3 * torch.randn(5, 6, dtype=F64)
    a, s = norm.alpha.item(), norm.shift.item()
    w = norm.weight.tolist() if norm.weight is not None else [1.0] * 6
    b = norm.bias.tolist() if norm.bias is not None else [0.0] * 6
    expected = torch.tensor(
        [[w[j] * erf_reference(a * row[j] + s) + b[j] for j in range(6)] for row in x.tolist()],
        dtype=F64,
    )
    torch.testing.assert_close(norm(x), expected)


def test_derf_is_bounded_and_not_dyt():
    norm = make_norm("derf", 4, dtype=F64)
    x = torch.tensor([[-1e4, -1.0, 1.0, 1e4]], dtype=F64)
    y = norm(x)
    assert y[0, 0] == -1.0 and y[0, 3] == 1.0
    dyt = make_norm("dyt", 4, dtype=F64)
    assert not torch.allclose(y, dyt(x))


def test_derf_gradients_of_the_scalars_are_the_formula_s():
    norm = perturbed("derf", 6)
    x, dy = torch.randn(2, 4, 6, dtype=F64).unbind(0)
    norm(x).backward(dy)
    z = norm.alpha.detach() * x + norm.shift.detach()
    k = 2 / math.sqrt(math.pi) * torch.exp(-z * z) * norm.weight.detach() * dy
    torch.testing.assert_close(norm.alpha.grad, (k * x).sum())
    torch.testing.assert_close(norm.shift.grad, k.sum())


# --- SeeDNorm -------------------------------------------------------------------------------


def seednorm_reference(x, alpha, beta, gamma, eps, heads):
    """Per token: gain_i = tanh(Σ_{j in head(i)} x_j β_j)·α_i + γ_i; y = gain ⊙ x / RMS(x)."""
    d = x.shape[-1]
    size = d // heads
    out = torch.empty_like(x)
    for t, row in enumerate(x.tolist()):
        rms = math.sqrt(sum(v * v for v in row) / d + eps)
        for i in range(d):
            h = i // size
            dot = sum(row[j] * beta[j] for j in range(h * size, (h + 1) * size))
            out[t, i] = (math.tanh(dot) * alpha[i] + gamma[i]) * row[i] / rms
    return out


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_seednorm_matches_formula(heads):
    norm = perturbed("seednorm", 8, heads=heads)
    x = 2 * torch.randn(6, 8, dtype=F64)
    expected = seednorm_reference(x, norm.alpha.tolist(), norm.beta.tolist(),
                                  norm.weight.tolist(), norm.eps, heads)
    torch.testing.assert_close(norm(x), expected)


def test_seednorm_starts_as_rmsnorm_and_beta_still_learns():
    norm = make_norm("seednorm", 8, dtype=F64)
    x = torch.randn(3, 8, dtype=F64)
    torch.testing.assert_close(norm(x), make_norm("rmsnorm", 8, dtype=F64)(x))
    norm(x).square().sum().backward()
    assert norm.beta.grad.abs().max() > 1e-3  # α = 1 ≠ 0 lets the gradient reach β


def test_seednorm_keeps_the_input_norm_that_rmsnorm_drops():
    norm = perturbed("seednorm", 8)
    x = torch.randn(3, 8, dtype=F64)
    rms = make_norm("rmsnorm", 8, eps=0.0, dtype=F64)
    torch.testing.assert_close(rms(x), rms(5 * x))
    assert not torch.allclose(norm(x), norm(5 * x))


def test_seednorm_without_affine_keeps_gamma_one_and_checks_heads():
    norm = make_norm("seednorm", 8, affine=False)
    assert [n for n, _ in norm.named_parameters()] == ["alpha", "beta"]
    assert torch.equal(norm.weight, torch.ones(8)) and "weight" not in norm.state_dict()
    for heads in (3, 0, True):
        with pytest.raises(ValueError, match="heads must be a positive int dividing dim=8"):
            make_norm("seednorm", 8, heads=heads)
