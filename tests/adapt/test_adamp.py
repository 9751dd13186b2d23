"""AdamP and SGDP against the paper's update written independently (plain fp64 loops), the
orthogonality of the update on scale-invariant weights, and equality with AdamW / SGD
elsewhere."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from normlab.optim import SGDP, AdamP, scale_invariant_view


def rows_of(t, channel):
    return t.reshape(t.shape[0], -1) if channel else t.reshape(1, -1)


def ref_project(w, g, u, delta, eps):
    """Heo et al.: for the channel, then the layer view, if max |cos(g, w)| < δ/√n, drop the
    component of u along each row's unit weight; returns (u, projected)."""
    for channel in (True, False):
        W, G, U = rows_of(w, channel), rows_of(g, channel), rows_of(u, channel).clone()
        n = W.shape[1]
        cos = [abs(float(W[i] @ G[i])) / max(float(W[i].norm() * G[i].norm()), eps)
               for i in range(W.shape[0])]
        if max(cos) < delta / math.sqrt(n):
            for i in range(W.shape[0]):
                unit = W[i] / (W[i].norm() + eps)
                U[i] = U[i] - unit * float(unit @ U[i])
            return U.reshape(u.shape), True
    return u, False


def ref_adamp(w, grads, lr, b1, b2, eps, wd, delta=0.1, wd_ratio=0.1):
    w = w.clone()
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        u = m / ((v / (1 - b2**t)).sqrt() + eps)
        u, projected = ref_project(w, g, u, delta, eps) if w.dim() > 1 else (u, False)
        w = w * (1 - lr * wd * (wd_ratio if projected else 1.0))
        w = w - lr / (1 - b1**t) * u
    return w


def scale_invariant_grads(w, steps, seed):
    """Gradients orthogonal to each row of w (as behind a BatchNorm per output unit)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        g = torch.randn(w.shape, generator=gen, dtype=torch.float64)
        out.append(g - w * (g * w).sum(1, keepdim=True) / (w * w).sum(1, keepdim=True))
    return out


def run(opt_class, w0, grads, **kw):
    p = nn.Parameter(w0.clone())
    opt = opt_class([p], **kw)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach()


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adamp_against_the_reference_on_a_scale_invariant_weight(wd):
    w0 = torch.randn(4, 6, dtype=torch.float64)
    grads = scale_invariant_grads(w0, 1, 0)  # orthogonal at w0: the first step projects
    got = run(AdamP, w0, grads, lr=1e-2, betas=(0.9, 0.999), weight_decay=wd)
    torch.testing.assert_close(got, ref_adamp(w0, grads, 1e-2, 0.9, 0.999, 1e-8, wd))


def test_adamp_update_is_orthogonal_to_each_row():
    w0 = torch.randn(5, 8, dtype=torch.float64)
    (g,) = scale_invariant_grads(w0, 1, 1)
    w1 = run(AdamP, w0, [g], lr=1e-2)
    step = w1 - w0
    cosine = (step * w0).sum(1) / (step.norm(dim=1) * w0.norm(dim=1))
    assert cosine.abs().max() < 1e-7  # 0 up to the eps in ŵ = w/(‖w‖ + eps)
    plain = run(torch.optim.Adam, w0, [g], lr=1e-2) - w0
    assert (plain * w0).sum(1).abs().max() > 1e-4  # Adam's own step has a radial part


def test_adamp_is_adamw_when_nothing_is_scale_invariant():
    gen = torch.Generator().manual_seed(3)
    w0 = torch.randn(4, 6, dtype=torch.float64, generator=gen)
    grads = [w0 * 0.5 + 0.1 * torch.randn(4, 6, dtype=torch.float64, generator=gen)
             for _ in range(5)]  # strongly aligned with w: never projected
    for shape in ((4, 6), (24,)):
        ws, gs = w0.reshape(shape), [g.reshape(shape) for g in grads]
        got = run(AdamP, ws, gs, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
        want = run(torch.optim.AdamW, ws, gs, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got, ref_adamp(ws, gs, 1e-2, 0.9, 0.95, 1e-8, 0.1))


def test_sgdp_against_sgd_and_the_reference():
    w0 = torch.randn(4, 6, dtype=torch.float64)
    aligned = [w0 * 0.3 + 0.05 * torch.randn(4, 6, dtype=torch.float64) for _ in range(4)]
    got = run(SGDP, w0, aligned, lr=0.1, momentum=0.9)
    torch.testing.assert_close(got, run(torch.optim.SGD, w0, aligned, lr=0.1, momentum=0.9))
    (g,) = scale_invariant_grads(w0, 1, 2)
    got = run(SGDP, w0, [g], lr=0.1, momentum=0.9, weight_decay=0.1)
    u, projected = ref_project(w0, g, g, 0.1, 1e-8)
    assert projected
    want = w0 * (1 - 0.1 * 0.1 * 0.1 / (1 - 0.9)) - 0.1 * u
    torch.testing.assert_close(got, want)


def test_views_detected_behind_a_norm():
    torch.manual_seed(0)
    fc, x = nn.Linear(8, 6, bias=False), torch.randn(32, 8)  # a bias would not scale with W
    nn.functional.batch_norm(fc(x), None, None, training=True).pow(3).sum().backward()
    assert scale_invariant_view(fc.weight, fc.weight.grad) is True  # per output unit
    fc.weight.grad = None
    nn.functional.layer_norm(fc(x), (6,)).pow(3).sum().backward()
    assert scale_invariant_view(fc.weight, fc.weight.grad) is False  # the whole matrix only
    fc.weight.grad = None
    fc(x).pow(2).sum().backward()
    assert scale_invariant_view(fc.weight, fc.weight.grad) is None


def test_refusals():
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="lr"):
        AdamP(p, lr=0.0)
    with pytest.raises(ValueError, match="wd_ratio"):
        SGDP(p, lr=0.1, wd_ratio=2.0)
    with pytest.raises(ValueError, match="momentum"):
        SGDP(p, lr=0.1, momentum=1.0)
