"""DyT and ELN against references written from their formulas."""

from __future__ import annotations

import math

import pytest
import torch
from tests.norms.helpers import perturbed

from normlab import make_norm
from normlab.norms.elementwise import eln


def dyt_reference(x, alpha, weight=None, bias=None):
    y = torch.tanh(alpha * x)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def eln_reference(x, mu, beta, weight=None, bias=None):
    c = x.shape[-1]
    d = x - mu
    y = (c - 1) ** 0.5 * d / (beta + d * d) ** 0.5
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


# --- DyT ------------------------------------------------------------------------------------


def test_dyt_alpha_init_default_and_custom():
    assert make_norm("dyt", 8).alpha.item() == 0.5
    norm = make_norm("dyt", 8, alpha_init=0.2)
    assert norm.alpha.shape == () and norm.alpha.item() == pytest.approx(0.2)
    assert isinstance(norm.alpha, torch.nn.Parameter)
    with pytest.raises(ValueError, match="alpha_init"):
        make_norm("dyt", 8, alpha_init=float("nan"))


@pytest.mark.parametrize("kw", [{}, {"bias": False}, {"affine": False}])
def test_dyt_matches_formula(kw):
    norm = perturbed("dyt", 12, **kw)
    x = 3 * torch.randn(2, 5, 12, dtype=torch.float64)
    expected = dyt_reference(x, norm.alpha, norm.weight, norm.bias)
    torch.testing.assert_close(norm(x), expected)
    if kw:
        assert norm.bias is None  # bias=False is the LLaMA variant; affine=False has neither
    assert "alpha" in dict(norm.named_parameters())  # α is learned in every variant


def test_dyt_train_equals_eval_and_is_elementwise():
    norm = perturbed("dyt", 8)
    x = torch.randn(3, 4, 8, dtype=torch.float64)
    train = norm.train()(x)
    torch.testing.assert_close(norm.eval()(x), train, rtol=0, atol=0)
    # Elementwise: a token's output does not see other tokens or channels.
    y = x.clone()
    y[0, 0, 0] += 5.0
    changed = (norm(y) != train).nonzero().tolist()
    assert changed == [[0, 0, 0]]


def test_dyt_gradcheck_fp64():
    norm = perturbed("dyt", 6)
    x = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(norm, (x,))


# --- ELN ------------------------------------------------------------------------------------


def test_eln_init():
    norm = make_norm("eln", 64)
    assert torch.equal(norm.shift, torch.zeros(64))
    assert norm.beta.item() == pytest.approx(64.0)
    assert torch.equal(norm.weight, torch.ones(64)) and torch.equal(norm.bias, torch.zeros(64))
    assert {"shift", "log_beta"} <= {n for n, _ in make_norm("eln", 8, affine=False)
                                      .named_parameters()}


@pytest.mark.parametrize("kw", [{}, {"bias": False}, {"affine": False}])
def test_eln_matches_formula(kw):
    norm = perturbed("eln", 10, **kw)
    x = 4 * torch.randn(3, 2, 10, dtype=torch.float64)
    beta = math.exp(norm.log_beta.item())
    expected = eln_reference(x, norm.shift, beta, norm.weight, norm.bias)
    torch.testing.assert_close(norm(x), expected)


def test_eln_bounds_are_sqrt_c_minus_1():
    c = 16
    norm = make_norm("eln", c, affine=False, dtype=torch.float64)
    x = torch.randn(4, c, dtype=torch.float64) * torch.logspace(-2, 6, 4, dtype=torch.float64)[
        :, None
    ]
    y = norm(x)
    bound = math.sqrt(c - 1)
    assert (y.abs() < bound).all()
    huge = norm(torch.tensor([[1e9] * c, [-1e9] * c], dtype=torch.float64))
    torch.testing.assert_close(huge, torch.tensor([[bound] * c, [-bound] * c],
                                                  dtype=torch.float64))


def test_eln_exact_identity_recovers_layernorm():
    """The paper's identity (Stollenwerk, "Elementwise Layer Normalization", arXiv 2503.21708):
    LN(x)_i = ELN with μ = m' and β = C/(C-1)·Σ_{k≠i}(x_k - m')², where m' is the mean of the
    other C-1 channels. Checks the formula of `eln` to round-off."""
    torch.manual_seed(1)
    c = 7
    x = 2 * torch.randn(3, 5, c, dtype=torch.float64) + 0.7
    others = ~torch.eye(c, dtype=torch.bool)  # row i: the channels k != i
    xo = x.unsqueeze(-2).expand(3, 5, c, c)[..., others].reshape(*x.shape, c - 1)
    m_prime = xo.mean(-1)
    beta = c / (c - 1) * (xo - m_prime.unsqueeze(-1)).square().sum(-1)
    got = eln(x, beta, shift=m_prime)
    expected = torch.nn.functional.layer_norm(x, (c,), eps=0.0)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_eln_close_to_layernorm_at_init_on_unit_variance_inputs():
    """With β₀ = C, ELN(x) = sqrt((C-1)/C)·x/sqrt(1 + x²/C) ≈ x = LN(x) on standardized tokens,
    with error <= |x|(1 + x²)/C; β₀ = 1 would be off by a factor ~sqrt(C)."""
    c = 256
    x = torch.randn(8, c, dtype=torch.float64)
    x = (x - x.mean(-1, keepdim=True)) / x.std(-1, correction=0, keepdim=True)
    ln = torch.nn.functional.layer_norm(x, (c,), eps=0.0)
    torch.testing.assert_close(ln, x)
    err = (make_norm("eln", c, dtype=torch.float64)(x) - ln).abs()
    assert (err <= x.abs() * (1 + x.square()) / c + 1e-12).all()


def test_eln_pure_function_keeps_half_dtype_and_is_finite():
    x = 300 * torch.randn(2, 3, 16)
    got = eln(x.half(), torch.tensor(16.0))
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), eln(x, 16.0), atol=1e-2, rtol=1e-2)


def test_eln_gradcheck_fp64():
    norm = perturbed("eln", 6)
    x = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(norm, (x,))
    beta = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    shift = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, b, s: eln(x, b, s), (x, beta, shift))
