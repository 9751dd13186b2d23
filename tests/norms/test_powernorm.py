"""PowerNorm against a step-by-step re-implementation of its forward and approximate backward."""

from __future__ import annotations

import pytest
import torch
from tests.norms.helpers import (
    affine_norm,
    assert_padding_excluded,
    assert_same_continuation,
    batches,
    edge_mask,
    train_step,
)

from normlab.norms import make_norm
from normlab.norms.powernorm import PowerNorm

DT = torch.float64
EPS = 1e-5


class ReferencePowerNorm:
    """PowerNorm written from the paper's algorithm and the official MaskPowerNorm code (Shen
    et al., ICML 2020; sIncerass/powernorm): plain tensors, backward by hand."""

    def __init__(self, dim: int, *, warmup: int, groups: int, af: float = 0.9, ab: float = 0.9):
        self.phi = torch.ones(dim, dtype=DT)
        self.gamma_acc = torch.zeros(dim, dtype=DT)  # Γ
        self.t = 0
        self.warmup, self.groups, self.af, self.ab = warmup, groups, af, ab

    def group_scale(self, x):
        c = x.shape[-1]
        xg = x.reshape(*x.shape[:-1], self.groups, c // self.groups)
        s = torch.sqrt((xg * xg).mean(-1, keepdim=True) + 1e-5)
        return xg / s, s

    def step(self, x, mask, dy, weight, bias):
        """One training call + its backward: (y, dx, dweight, dbias, psi2)."""
        self.t += 1
        t = self.t
        xg, s = self.group_scale(x)
        xt = xg.reshape(x.shape)
        real = torch.ones(x.shape[:-1], dtype=torch.bool) if mask is None else mask
        psi2 = (xt[real] ** 2).mean(0)
        z = xt / torch.sqrt((psi2 if t <= self.warmup else self.phi) + EPS)
        y = weight * z + bias
        if t < self.warmup:
            self.phi = self.phi * (t - 1) / t + psi2 / t
        self.phi = self.af * self.phi + (1 - self.af) * psi2

        g = dy * weight
        g_hat = g - (1 - self.ab) * self.gamma_acc * z
        self.gamma_acc = self.gamma_acc + (g_hat * z)[real].mean(0)
        g_hat = torch.where(real.unsqueeze(-1), g_hat, g)
        dxt = g_hat / torch.sqrt(psi2 + EPS)
        # backward of x/s, s = sqrt(mean_g(x²) + eps): (d - y·mean_g(d·y)) / s per group
        dg = dxt.reshape(xg.shape)
        dx = ((dg - xg * (dg * xg).mean(-1, keepdim=True)) / s).reshape(x.shape)
        c = x.shape[-1]
        return y, dx, (dy * z).reshape(-1, c).sum(0), dy.reshape(-1, c).sum(0), psi2


def _module(dim=8, **kw) -> PowerNorm:
    return affine_norm("powernorm", dim, **kw)


def _batches(steps, shape, seed=1):
    """Batches whose scale grows by half of the first one per step."""
    return batches([1.0 + 0.5 * k for k in range(steps)], shape, seed=seed, shift=0.2)


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
def test_matches_reference_before_and_after_warmup(use_mask, groups):
    shape, dim, warmup = (3, 5, 8), 8, 3
    norm = _module(dim, warmup_iters=warmup, group_num=groups)
    ref = ReferencePowerNorm(dim, warmup=warmup, groups=groups)
    mask = edge_mask(shape[:-1]) if use_mask else None
    for step, (x, dy) in enumerate(_batches(7, shape), start=1):
        y, dx, dw, db = train_step(norm, x, mask, dy)
        ry, rdx, rdw, rdb, _ = ref.step(x, mask, dy, norm.weight.detach(), norm.bias.detach())
        for got, want in ((y, ry), (dx, rdx), (dw, rdw), (db, rdb)):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=f"step {step}")
        torch.testing.assert_close(norm.running_phi, ref.phi, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(norm.ema_gz, ref.gamma_acc, rtol=1e-10, atol=1e-12)
        assert int(norm.iters) == step
    assert ref.t > warmup + 1  # both branches of forward and φ update were exercised


def test_first_steps_running_phi_by_hand():
    norm = _module(4, warmup_iters=100)
    x1 = torch.randn(6, 4, dtype=DT)
    x2 = 3 * torch.randn(6, 4, dtype=DT)
    ref = ReferencePowerNorm(4, warmup=100, groups=1)
    psi1 = ref.group_scale(x1)[0].reshape(x1.shape).square().mean(0)
    psi2 = ref.group_scale(x2)[0].reshape(x2.shape).square().mean(0)
    norm(x1)
    # t = 1: cumulative mean of one batch is ψ², and the EMA of ψ² with itself stays ψ²
    torch.testing.assert_close(norm.running_phi, psi1, rtol=1e-12, atol=0)
    norm(x2)
    torch.testing.assert_close(
        norm.running_phi, 0.9 * (psi1 + psi2) / 2 + 0.1 * psi2, rtol=1e-12, atol=0
    )


def test_backward_divides_by_batch_psi_after_warmup():
    norm = _module(4, warmup_iters=1)
    for _ in range(3):  # t = 2, 3 use φ in the forward; random dy makes Γ non-zero
        x = torch.randn(5, 4, dtype=DT) * 4
        train_step(norm, x, None, torch.randn_like(x))
    # g = 0 leaves only -(1-α_b)·Γ·z in ĝ; z uses φ, the division uses the batch ψ²
    x = torch.randn(5, 4, dtype=DT) * 4
    phi, gam = norm.running_phi.clone(), norm.ema_gz.clone()
    _, dx, _, _ = train_step(norm, x, None, torch.zeros_like(x))
    ref = ReferencePowerNorm(4, warmup=1, groups=1)
    xg, s = ref.group_scale(x)
    xt = xg.reshape(x.shape)
    psi2 = xt.square().mean(0)
    z = xt / torch.sqrt(phi + EPS)
    dxt = (-0.1 * gam * z / torch.sqrt(psi2 + EPS)).reshape(xg.shape)
    want = ((dxt - xg * (dxt * xg).mean(-1, keepdim=True)) / s).reshape(x.shape)
    torch.testing.assert_close(dx, want, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(phi, psi2) and gam.abs().min() > 0


def test_gamma_accumulates_additively():
    """Γ ← Γ + mean(ĝ·z), additive as in the official MaskPowerNorm backward, not an EMA on Γ."""
    norm = _module(4, warmup_iters=5)
    x = torch.randn(64, 4, dtype=DT)
    dy = torch.ones_like(x)
    train_step(norm, x, None, dy)
    first = norm.ema_gz.clone()
    norm.zero_grad()
    xr = x.clone().requires_grad_(True)
    y = norm(xr)
    z = (y.detach() - norm.bias.detach()) / norm.weight.detach()
    y.backward(dy)
    g_hat = dy * norm.weight.detach() - 0.1 * first * z
    torch.testing.assert_close(norm.ema_gz, first + (g_hat * z).mean(0), rtol=1e-10, atol=1e-12)


def test_padding_is_excluded():
    shape = (3, 5, 8)
    mask = edge_mask(shape[:-1])
    steps = assert_padding_excluded(
        lambda: _module(warmup_iters=2), _batches(4, shape, seed=3), mask, garbage=100.0
    )
    params = _module(warmup_iters=2)  # the same γ, β as the trained copies (no optimizer step)
    gamma, beta = params.weight.detach(), params.bias.detach()
    for _, dy, (y, _, dw, _), (_, _, dw_real, _) in steps:
        # dγ sums dy·z over every output position, padded ones included
        z = (y - beta) / gamma
        torch.testing.assert_close(dw - (dy * z)[~mask].sum(0), dw_real)


def test_eval_uses_running_phi_and_is_per_token():
    norm = _module(8, warmup_iters=2, group_num=2)
    for x, dy in _batches(3, (4, 8)):
        train_step(norm, x, None, dy)
    norm.eval()
    x = torch.randn(3, 6, 8, dtype=DT)
    ref = ReferencePowerNorm(8, warmup=2, groups=2)
    xt = ref.group_scale(x)[0].reshape(x.shape)
    want = norm.weight * xt / torch.sqrt(norm.running_phi + EPS) + norm.bias
    phi = norm.running_phi.clone()
    y = norm(x)
    torch.testing.assert_close(y, want)
    torch.testing.assert_close(norm(x[1:2, 2:3]), y[1:2, 2:3])
    assert torch.equal(norm.running_phi, phi) and int(norm.iters) == 3


def test_state_dict_round_trip_mid_training():
    shape = (2, 4, 8)
    mask = edge_mask(shape[:-1])
    data = list(_batches(6, shape, seed=5))
    a = _module(warmup_iters=3, group_num=2)
    for x, dy in data[:3]:
        train_step(a, x, mask, dy)
    b = make_norm("powernorm", 8, warmup_iters=3, group_num=2, dtype=DT)
    b.load_state_dict(a.state_dict())
    assert set(a.state_dict()) >= {"running_phi", "ema_gz", "iters", "weight", "bias"}
    assert_same_continuation(a, b, data[3:], mask)


def test_half_precision_keeps_dtype_and_fp32_statistics():
    norm32 = make_norm("powernorm", 16)
    norm16 = make_norm("powernorm", 16)
    x = torch.randn(4, 16)
    y32 = norm32(x)
    y16 = norm16(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16 and norm16.running_phi.dtype == torch.float32
    torch.testing.assert_close(y16.float(), y32, rtol=2e-2, atol=2e-2)


def test_info():
    info = PowerNorm.info
    assert (info.stats, info.fold, info.has_running_stats, info.approx_backward) == (
        "batch", "affine", True, True
    )
    norm = PowerNorm(6)
    assert (norm.alpha_fwd, norm.alpha_bkw, norm.warmup_iters, norm.group_num, norm.eps) == (
        0.9, 0.9, 10000, 1, 1e-5
    )
    with pytest.raises(TypeError, match="fold"):
        norm.eval_affine()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"group_num": 3}, "divisor"),
        ({"group_num": 0}, "divisor"),
        ({"alpha_fwd": 1.5}, "alpha_fwd"),
        ({"alpha_bkw": -0.1}, "alpha_bkw"),
        ({"warmup_iters": -1}, "warmup_iters"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_norm("powernorm", 8, **kwargs)


def test_all_padded_batch_is_an_error():
    norm = make_norm("powernorm", 4)
    with pytest.raises(ValueError, match="real token"):
        norm(torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.bool))
