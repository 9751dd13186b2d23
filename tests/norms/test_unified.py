"""Unified Normalization against a step-by-step re-implementation of its forward and backward."""

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
from normlab.norms.unified import UnifiedNorm

DT = torch.float64
EPS = 1e-5
M = 0.9


class ReferenceUN:
    """UN1d written from the paper (Yang et al., ACM MM 2022) and its official UN1d code with plain
    tensors; `events` records the branches."""

    def __init__(self, dim, *, wf, wb, warmup, outlier, comp=1000):
        self.rv = torch.ones(dim, dtype=DT)
        self.ema_gz = torch.zeros(dim, dtype=DT)
        self.bx2 = torch.zeros(wf, dim, dtype=DT)
        self.bgz = torch.zeros(wb, dim, dtype=DT)
        self.t = 0
        self.skips = 0
        self.wf, self.wb, self.warmup, self.outlier, self.comp = wf, wb, warmup, outlier, comp
        self.events: list[str] = []

    @staticmethod
    def gm(buf):
        return buf.prod(0) ** (1.0 / buf.shape[0])

    def step(self, x, mask, dy, w, b):
        self.t += 1
        t = self.t
        real = torch.ones(x.shape[:-1], dtype=torch.bool) if mask is None else mask
        x2 = (x[real] ** 2).mean(0)
        rec = torch.var(torch.sqrt(self.bx2))
        self.bx2[t % self.wf] = x2
        skip = self.wf == 1
        if self.outlier and t >= self.warmup:
            am = self.bx2.mean(0)
            if ((am - self.gm(self.bx2)) > self.wf * rec).any():
                self.bx2[t % self.wf] = self.rv
                skip = True
                self.skips += 1
                self.events.append("skip")
        if t <= self.wf or t < self.warmup or skip:
            var = x2
        else:
            var = self.gm(self.bx2)
            self.events.append("smooth")
        r = torch.sqrt(var + EPS) / torch.sqrt(self.rv + EPS)
        if t <= max(self.comp, self.warmup) or skip:
            r = torch.ones_like(r)
        else:
            if (r > 5).any() or (r < 0.2).any():
                self.events.append("clamp")
            r = r.clamp(0.2, 5)
            self.events.append("r")
        z = x / torch.sqrt(var + EPS)
        y = w * z + b
        self.rv = M * self.rv + (1 - M) * var

        g = dy * w * r
        gz = (g * z)[real].mean(0)
        self.bgz[t % self.wb] = self.ema_gz if skip else gz
        if t <= self.wb or t < self.warmup or skip:
            mean_gz = gz
        else:
            mean_gz = self.bgz.mean(0)
            self.events.append("gz-window")
        self.ema_gz = self.ema_gz * M + (1 - M) * mean_gz
        g_hat = g - (mean_gz if skip else self.ema_gz) * z
        g_hat = torch.where(real.unsqueeze(-1), g_hat, g)
        dx = g_hat / torch.sqrt(var + EPS)
        c = x.shape[-1]
        return y, dx, (dy * r * z).reshape(-1, c).sum(0), dy.reshape(-1, c).sum(0)


def _module(dim=6, **kw) -> UnifiedNorm:
    return affine_norm("unifiednorm", dim, **kw)


def _compare(norm, ref, data, mask):
    for step, (x, dy) in enumerate(data, start=1):
        got = train_step(norm, x, mask, dy)
        want = ref.step(x, mask, dy, norm.weight.detach(), norm.bias.detach())
        for name, g, w in zip(("y", "dx", "dweight", "dbias"), got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11, msg=f"{name} at step {step}")
        torch.testing.assert_close(norm.running_var, ref.rv, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(norm.ema_gz, ref.ema_gz, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(norm.buffer_x2, ref.bx2, rtol=1e-12, atol=0)
        torch.testing.assert_close(norm.buffer_gz, ref.bgz, rtol=1e-9, atol=1e-12)
        assert int(norm.iters) == ref.t and int(norm.skip_counter) == ref.skips


# 1000× and 1/1000× batches push r past the clamp once the window smooths them.
_SCALES = [1, 1.5, 0.8, 1, 2, 1, 1000, 1, 1, 0.001, 1, 1]


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("window", [3, (3, 2)])
def test_matches_reference_windows_warmup_and_clamp(use_mask, window):
    wf, wb = (window, window) if isinstance(window, int) else window
    shape, dim = (3, 5, 6), 6
    norm = _module(dim, window_size=window, warmup_iters=2, compensation_start=4)
    ref = ReferenceUN(dim, wf=wf, wb=wb, warmup=2, outlier=False, comp=4)
    mask = edge_mask(shape[:-1]) if use_mask else None
    _compare(norm, ref, batches(_SCALES, shape), mask)
    assert {"smooth", "r", "clamp", "gz-window"} <= set(ref.events)


def test_matches_reference_with_outlier_skip():
    shape, dim = (4, 6, 6), 6
    norm = _module(dim, window_size=3, warmup_iters=5, outlier_filtration=True,
                   compensation_start=5)
    ref = ReferenceUN(dim, wf=3, wb=3, warmup=5, outlier=True, comp=5)
    scales = [1, 1, 1, 1, 1, 1, 1, 10, 1, 1, 1, 1, 1]
    _compare(norm, ref, batches(scales, shape, seed=2), edge_mask(shape[:-1]))
    assert "skip" in ref.events and "smooth" in ref.events and "r" in ref.events
    assert int(norm.skip_counter) >= 1


@pytest.mark.parametrize(("root", "skipped"), [(2.2, False), (2.6, True)])
def test_outlier_threshold_uses_unbiased_window_variance(root, skipped):
    """Window {1, 4}: var_unbiased(sqrt) = 0.5, so the threshold is W_f·0.5 = 1.0 (biased: 0.5).

    The new x2 = root² replaces the 4; AM - GM of {1, root²} is (root - 1)²/2: 0.72 or 1.28.
    """
    norm = make_norm("unifiednorm", 1, window_size=2, warmup_iters=2, outlier_filtration=True)
    norm.double()
    norm.buffer_x2.copy_(torch.tensor([[1.0], [4.0]]))
    norm.running_var.fill_(3.0)
    norm.iters.fill_(10)  # t = 11 writes slot 1
    norm(torch.full((1, 1), root, dtype=DT))
    assert int(norm.skip_counter) == int(skipped)
    assert norm.buffer_x2[1, 0].item() == pytest.approx(3.0 if skipped else root**2)


def test_window_size_one_always_skips_smoothing():
    norm = _module(4, window_size=1, warmup_iters=0, compensation_start=0)
    ref = ReferenceUN(4, wf=1, wb=1, warmup=0, outlier=False, comp=0)
    _compare(norm, ref, batches([1, 2, 3, 1], (5, 4)), None)
    assert "smooth" not in ref.events and "r" not in ref.events


def test_default_compensation_start_is_1000():
    norm = _module(4, window_size=2, warmup_iters=1)
    ref = ReferenceUN(4, wf=2, wb=2, warmup=1, outlier=False)
    data = list(batches([1, 2, 1, 3, 1, 2], (6, 4)))
    _compare(norm, ref, data[:3], None)
    norm.iters.fill_(998)
    ref.t = 998
    ref.events.clear()
    _compare(norm, ref, data[3:5], None)  # t = 999, 1000: r = 1
    assert "r" not in ref.events
    _compare(norm, ref, data[5:], None)  # t = 1001: r compensates
    assert "r" in ref.events


def test_all_zero_channel_stays_finite():
    norm = _module(4, window_size=2, warmup_iters=1, outlier_filtration=True, compensation_start=1)
    for k in range(6):
        x = torch.randn(3, 5, 4, dtype=DT) * (1 + k)
        x[..., 2] = 0.0
        y, dx, dw, db = train_step(norm, x, None, torch.randn_like(x))
        for tensor in (y, dx, dw, db, norm.running_var, norm.ema_gz):
            assert torch.isfinite(tensor).all()
        torch.testing.assert_close(y[..., 2], norm.bias[2].detach().expand(3, 5))
    norm.eval()
    assert torch.isfinite(norm(torch.randn(2, 4, dtype=DT))).all()


def test_padding_is_excluded():
    shape = (3, 5, 6)
    mask = edge_mask(shape[:-1])
    kw = {"window_size": 2, "warmup_iters": 2, "compensation_start": 2}
    steps = assert_padding_excluded(
        lambda: _module(**kw), batches([1, 2, 1, 3, 1], shape, seed=4), mask, garbage=50.0
    )
    for _, dy, (*_, db), (*_, db_real) in steps:  # dβ sums dy over padded positions too
        torch.testing.assert_close(db - dy[~mask].sum(0), db_real)


def test_eval_is_the_running_affine():
    norm = _module(6, window_size=2, warmup_iters=1)
    for x, dy in batches([1, 3, 2], (4, 6)):
        train_step(norm, x, None, dy)
    norm.eval()
    x = torch.randn(2, 3, 6, dtype=DT)
    y = norm(x)
    want = norm.weight * x / torch.sqrt(norm.running_var + EPS) + norm.bias
    torch.testing.assert_close(y, want)
    scale, shift = norm.eval_affine()
    torch.testing.assert_close(y, x * scale + shift)
    torch.testing.assert_close(norm(x[1, 2]), y[1, 2])
    assert int(norm.iters) == 3
    plain = make_norm("unifiednorm", 6, affine=False)
    plain.running_var.fill_(4.0)
    plain.eval()
    scale, shift = plain.eval_affine()
    torch.testing.assert_close(scale, torch.full((6,), (4.0 + EPS) ** -0.5))
    assert torch.equal(shift, torch.zeros(6))


def test_state_dict_round_trip_mid_training():
    shape = (2, 4, 6)
    mask = edge_mask(shape[:-1])
    kw = {"window_size": (3, 2), "warmup_iters": 2, "outlier_filtration": True,
          "compensation_start": 2}
    data = list(batches([1, 1, 2, 1, 1, 1, 8, 1], shape, seed=6))
    a = _module(**kw)
    for x, dy in data[:4]:
        train_step(a, x, mask, dy)
    b = make_norm("unifiednorm", 6, **kw, dtype=DT)
    b.load_state_dict(a.state_dict())
    assert_same_continuation(a, b, data[4:], mask)


def test_defaults_and_info():
    norm = UnifiedNorm(8)
    assert (norm.warmup_iters, norm.outlier_filtration, norm.momentum, norm.eps) == (
        4000, False, 0.9, 1e-5
    )
    assert norm.buffer_x2.shape == (4, 8) and norm.buffer_gz.shape == (4, 8)
    assert UnifiedNorm(8, window_size=(5, 2)).buffer_gz.shape == (2, 8)
    info = UnifiedNorm.info
    assert (info.stats, info.fold, info.has_running_stats, info.approx_backward) == (
        "batch", "op", True, True
    )


def test_half_precision_keeps_dtype():
    norm32, norm16 = make_norm("unifiednorm", 8), make_norm("unifiednorm", 8)
    x = torch.randn(3, 4, 8)
    y16 = norm16(x.half())
    assert y16.dtype == torch.float16 and norm16.running_var.dtype == torch.float32
    torch.testing.assert_close(y16.float(), norm32(x), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window_size": 0}, "window_size"),
        ({"window_size": (2, 3, 4)}, "window_size"),
        ({"window_size": 2.5}, "window_size"),
        ({"momentum": 1.5}, "momentum"),
        ({"warmup_iters": -3}, "warmup_iters"),
        ({"compensation_start": -1}, "compensation_start"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_norm("unifiednorm", 8, **kwargs)
