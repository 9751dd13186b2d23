"""Online Normalization against a token-by-token re-implementation of its forward and backward."""

from __future__ import annotations

import time

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
from normlab.norms.online import OnlineNorm, linear_recurrence

DT = torch.float64
EPS = 1e-5


class ReferenceOnline:
    """Online Normalization written from the paper's algorithm (Chiley et al., NeurIPS 2019) and the
    official Cerebras online-normalization code: one token at a time, plain loops."""

    def __init__(self, dim, *, af=0.999, ab=0.99, clamp=5.0):
        self.mu = torch.zeros(dim, dtype=DT)
        self.var = torch.ones(dim, dtype=DT)
        self.u = torch.zeros(dim, dtype=DT)
        self.v = torch.zeros(dim, dtype=DT)
        self.af, self.ab, self.clamp = af, ab, clamp
        self.clamped = 0

    def step(self, x, mask, dy, w, b):
        c = x.shape[-1]
        rows, grads = x.reshape(-1, c), dy.reshape(-1, c)
        real = torch.ones(rows.shape[0], dtype=torch.bool) if mask is None else mask.reshape(-1)
        outs, scales = [], []
        for n in range(rows.shape[0]):
            scale = torch.sqrt(self.var + EPS)
            outs.append((rows[n] - self.mu) / scale)
            scales.append(scale)
            if real[n]:
                diff = rows[n] - self.mu
                self.var = self.af * self.var + self.af * (1 - self.af) * diff**2
                self.mu = self.mu + (1 - self.af) * diff
        out = torch.stack(outs)
        pre = w * out + b
        y = pre.clamp(-self.clamp, self.clamp)
        inside = (pre.abs() < self.clamp).to(DT)
        self.clamped += int((inside == 0).sum())
        gy = grads * inside
        g = gy * w
        dx = torch.empty_like(rows)
        for n in range(rows.shape[0]):
            if not real[n]:
                dx[n] = g[n] / scales[n]
                continue
            gh = g[n] - (1 - self.ab) * self.v * out[n]
            self.v = self.v + gh * out[n]
            gh = gh / scales[n]
            dx[n] = gh - (1 - self.ab) * self.u
            self.u = self.u + dx[n]
        return (y.reshape(x.shape), dx.reshape(x.shape), (gy * out).sum(0), gy.sum(0))


def _module(dim=6, w_scale=0.5, **kw) -> OnlineNorm:
    return affine_norm("onlinenorm", dim, w_scale=w_scale, **kw)


def _batches(steps, shape, seed=1, scale=1.0):
    """Batches whose scale grows by `scale` per step."""
    return batches([scale * (1 + k) for k in range(steps)], shape, seed=seed, shift=0.5)


def _compare(norm, ref, data, mask, rtol=1e-10, atol=1e-12):
    for step, (x, dy) in enumerate(data, start=1):
        got = train_step(norm, x, mask, dy)
        want = ref.step(x, mask, dy, norm.weight.detach(), norm.bias.detach())
        for name, g, w in zip(("y", "dx", "dweight", "dbias"), got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=rtol, atol=atol, msg=f"{name} at step {step}")
        for name, want_state in (("running_mean", ref.mu), ("running_var", ref.var),
                                 ("u", ref.u), ("v", ref.v)):
            torch.testing.assert_close(getattr(norm, name), want_state, rtol=rtol, atol=atol)


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize(("af", "ab"), [(0.999, 0.99), (0.7, 0.8)])
def test_matches_token_by_token_reference(use_mask, af, ab):
    shape = (3, 7, 5)
    norm = _module(5, w_scale=1.5, alpha_fwd=af, alpha_bkw=ab)
    ref = ReferenceOnline(5, af=af, ab=ab)
    mask = edge_mask(shape[:-1]) if use_mask else None
    _compare(norm, ref, _batches(3, shape, scale=2.0), mask)
    assert ref.clamped > 0  # the activation clamp was active in forward and backward


def test_float32_matches_float64_reference():
    norm = make_norm("onlinenorm", 16, alpha_fwd=0.9)
    ref = ReferenceOnline(16, af=0.9)
    gen = torch.Generator().manual_seed(3)
    for _ in range(2):
        x = torch.randn(4, 33, 16, generator=gen)
        dy = torch.randn(4, 33, 16, generator=gen)
        got = train_step(norm, x, None, dy)
        want = ref.step(x.double(), None, dy.double(), torch.ones(16, dtype=DT),
                        torch.zeros(16, dtype=DT))
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w.float(), rtol=1e-4, atol=1e-4)


def test_tokens_stream_in_row_major_order():
    """One call on two sequences equals two calls, one per sequence, forward and backward."""
    shape = (2, 6, 4)
    x, dy = next(_batches(1, shape, seed=7))
    one, two = _module(4, alpha_fwd=0.8), _module(4, alpha_fwd=0.8)
    y, dx, dw, db = train_step(one, x, None, dy)
    parts = [train_step(two, x[i : i + 1], None, dy[i : i + 1]) for i in range(2)]
    torch.testing.assert_close(y, torch.cat([p[0] for p in parts]))
    torch.testing.assert_close(dx, torch.cat([p[1] for p in parts]))
    torch.testing.assert_close(dw, parts[0][2] + parts[1][2])
    torch.testing.assert_close(db, parts[0][3] + parts[1][3])
    for name in ("running_mean", "running_var", "u", "v"):
        torch.testing.assert_close(getattr(one, name), getattr(two, name))


@pytest.mark.parametrize(("alpha_bkw", "controlled"), [(0.9, True), (1.0, False)])
def test_control_removes_the_mean_gradient_over_a_stream(alpha_bkw, controlled):
    """Σ dx over a span is the change of u, which stays bounded: the mean component decays."""
    norm = make_norm("onlinenorm", 3, alpha_bkw=alpha_bkw, ecm=None, affine=False).double()
    x = torch.randn(1, 600, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    norm(x).sum().backward()  # dL/dy = 1 on every token
    tail_mean = x.grad[0, -300:].mean(0).abs()
    assert (tail_mean < 0.05).all() if controlled else (tail_mean > 0.5).all()


def test_batch_size_one_and_one_dimensional_input():
    norm = _module(4, alpha_fwd=0.5)
    ref = ReferenceOnline(4, af=0.5)
    gen = torch.Generator().manual_seed(2)
    for shape in ((1, 4), (4,), (1, 1, 4)):
        x, dy = torch.randn(shape, generator=gen, dtype=DT), torch.randn(shape, generator=gen,
                                                                          dtype=DT)
        got = train_step(norm, x, None, dy)
        want = ref.step(x, None, dy, norm.weight.detach(), norm.bias.detach())
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_padding_is_excluded():
    shape = (3, 5, 6)
    assert_padding_excluded(
        lambda: _module(alpha_fwd=0.8), _batches(3, shape, seed=4), edge_mask(shape[:-1]),
        garbage=1e3,
    )


def test_eval_uses_frozen_statistics_without_clamp():
    norm = _module(6, alpha_fwd=0.6)
    for x, dy in _batches(2, (2, 5, 6)):
        train_step(norm, x, None, dy)
    norm.eval()
    frozen = {k: v.clone() for k, v in norm.state_dict().items()}
    x = 20 * torch.randn(3, 4, 6, dtype=DT)
    y = norm(x)
    want = norm.weight * (x - norm.running_mean) / torch.sqrt(norm.running_var + EPS) + norm.bias
    torch.testing.assert_close(y, want)
    assert y.abs().max() > 5  # the clamp guards training only
    scale, shift = norm.eval_affine()
    torch.testing.assert_close(y, x * scale + shift)
    torch.testing.assert_close(norm(x[2, 1]), y[2, 1])
    for key, value in norm.state_dict().items():
        assert torch.equal(value, frozen[key]), key


def test_state_dict_round_trip_mid_training():
    shape = (2, 4, 6)
    mask = edge_mask(shape[:-1])
    data = list(_batches(4, shape, seed=5))
    a = _module(alpha_fwd=0.8)
    for x, dy in data[:2]:
        train_step(a, x, mask, dy)
    b = make_norm("onlinenorm", 6, alpha_fwd=0.8, dtype=DT)
    b.load_state_dict(a.state_dict())
    assert set(a.state_dict()) >= {"running_mean", "running_var", "u", "v"}
    assert_same_continuation(a, b, data[2:], mask)


@pytest.mark.parametrize("n", [0, 1, 2, 5, 8, 13])
def test_linear_recurrence_equals_the_loop(n):
    gen = torch.Generator().manual_seed(n)
    c = torch.randn(n, 3, generator=gen, dtype=DT)
    d = torch.randn(n, 3, generator=gen, dtype=DT)
    s = [torch.randn(3, generator=gen, dtype=DT)]
    for k in range(n):
        s.append(c[k] * s[-1] + d[k])
    torch.testing.assert_close(linear_recurrence(c, d, s[0]), torch.stack(s))


def test_half_precision_keeps_dtype():
    norm32, norm16 = make_norm("onlinenorm", 8), make_norm("onlinenorm", 8)
    x = torch.randn(3, 4, 8)
    y16 = norm16(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16 and norm16.running_var.dtype == torch.float32
    torch.testing.assert_close(y16.float(), norm32(x), rtol=2e-2, atol=2e-2)


def test_defaults_and_info():
    norm = OnlineNorm(8)
    assert (norm.alpha_fwd, norm.alpha_bkw, norm.ecm, norm.clamp_value, norm.eps) == (
        0.999, 0.99, "ac", 5.0, 1e-5
    )
    info = OnlineNorm.info
    assert (info.stats, info.fold, info.has_running_stats, info.approx_backward) == (
        "batch", "op", True, True
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ecm": "ls"}, "ecm"),
        ({"alpha_fwd": 2.0}, "alpha_fwd"),
        ({"alpha_bkw": -1.0}, "alpha_bkw"),
        ({"clamp_value": 0.0}, "clamp_value"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_norm("onlinenorm", 8, **kwargs)


@pytest.mark.slow
def test_speed_of_a_training_step():
    norm = make_norm("onlinenorm", 128)
    x = torch.randn(8, 64, 128, requires_grad=True)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        norm(x).sum().backward()
        times.append(time.perf_counter() - start)
    assert sorted(times)[2] < 0.05
