"""The CPU backends ("torch", "cpp", "reference") against independent float64 references and
each other."""

from __future__ import annotations

import pytest
import torch
from tests.kernels.cases import (
    CPU_BACKENDS,
    OPS,
    TOL,
    assert_close,
    call,
    grad_pairs,
    grads,
    make_inputs,
    reference,
)

from normlab import kernels
from normlab.norms import functional as F

SHAPES = [(3, 7, 33), (5, 1), (2, 4, 1000), (17,)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("backend", [*CPU_BACKENDS, "reference"])
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", ["wb", "w", "b", "none"])
def test_matches_reference_with_grads(backend, op, shape, dtype, affine):
    inputs = make_inputs(op, shape, dtype, weight="w" in affine, bias="b" in affine)
    out = call(op, inputs, backend)
    assert all(o.dtype == dtype and o.shape == shape for o in out)
    expected = reference(op, inputs)
    for k, (o, e) in enumerate(zip(out, expected, strict=True)):
        assert_close(o, e, dtype, f"{op} output {k}")
    for name, g, ge in grad_pairs(out, expected, inputs):
        assert_close(g, ge, dtype, f"{op} d{name}", scale=4.0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("op", OPS)
def test_fast_backends_equal_functional(backend, op):
    inputs = make_inputs(op, (4, 9, 48), torch.float32)
    fast = call(op, inputs, backend)
    slow = call(op, inputs, "reference")
    for f, s in zip(fast, slow, strict=True):
        torch.testing.assert_close(f, s, atol=2e-6, rtol=2e-6)
    for gf, gs in zip(grads(fast, inputs), grads(slow, inputs), strict=True):
        torch.testing.assert_close(gf, gs, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_mixed_precision_params(backend):
    # bfloat16 activations with float32 parameters: parameter gradients stay float32.
    for op in OPS:
        inputs = make_inputs(op, (3, 5, 40), torch.bfloat16, param_dtype=torch.float32)
        out = call(op, inputs, backend)
        expected = reference(op, inputs)
        for o, e in zip(out, expected, strict=True):
            assert o.dtype == torch.bfloat16
            assert_close(o, e, torch.bfloat16, op)
        for name, g, ge in grad_pairs(out, expected, inputs):
            assert g.dtype == inputs[name].dtype
            assert_close(g, ge, torch.bfloat16, f"{op} d{name}", scale=4.0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("op", OPS)
def test_gradcheck_float64(backend, op):
    for affine in (True, False):
        inputs = make_inputs(op, (2, 3, 8), torch.float64, weight=affine, bias=affine)
        names = [k for k, v in inputs.items() if v is not None]
        absent = _nones(inputs)

        def fn(*tensors, names=names, absent=absent):
            return call(op, dict(zip(names, tensors, strict=True)) | absent, backend)

        assert torch.autograd.gradcheck(fn, tuple(inputs[k] for k in names))


def _nones(inputs):
    return {k: None for k, v in inputs.items() if v is None}


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_equals_torch_layers(backend):
    x = torch.randn(6, 10, 64)
    ln = torch.nn.LayerNorm(64)
    rms = torch.nn.RMSNorm(64, eps=1e-6)
    with torch.no_grad():
        ln.weight.normal_(), ln.bias.normal_(), rms.weight.normal_()
    torch.testing.assert_close(kernels.layer_norm(x, ln.weight, ln.bias, backend=backend), ln(x))
    torch.testing.assert_close(kernels.rms_norm(x, rms.weight, backend=backend), rms(x))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_rms_scale_invariance_and_ln_shift_invariance(backend):
    x = torch.randn(8, 96, dtype=torch.float64)
    w = torch.randn(96, dtype=torch.float64)
    y = kernels.rms_norm(x, w, eps=0.0, backend=backend)
    torch.testing.assert_close(kernels.rms_norm(7.5 * x, w, eps=0.0, backend=backend), y)
    z = kernels.layer_norm(x, w, eps=0.0, backend=backend)
    torch.testing.assert_close(kernels.layer_norm(x - 3.0, w, eps=0.0, backend=backend), z)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("alpha", [0.0, -0.8, 40.0])
def test_dyt_edge_alphas_and_saturation(backend, alpha):
    x = torch.cat([torch.randn(4, 16), torch.full((1, 16), 1e4), torch.full((1, 16), -1e4)])
    x = x.double().requires_grad_()
    a = torch.tensor(alpha, dtype=torch.float64, requires_grad=True)
    w = torch.randn(16, dtype=torch.float64, requires_grad=True)
    y = kernels.dyt(x, a, w, None, backend=backend)
    ref = w * torch.tanh(a * x)
    torch.testing.assert_close(y, ref, atol=1e-12, rtol=1e-12)
    g = torch.randn_like(y)
    for got, want in zip(torch.autograd.grad(y, [x, a, w], g),
                         torch.autograd.grad(ref, [x, a, w], g), strict=True):
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_dyt_float_alpha_and_functional_equivalence(backend):
    x = torch.randn(3, 20)
    torch.testing.assert_close(
        kernels.dyt(x, 0.5, backend=backend), F.dyt(x, 0.5), atol=1e-6, rtol=1e-6
    )


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_noncontiguous_input_and_empty_batch(backend):
    x = torch.randn(12, 8).t()  # (8, 12), not contiguous
    w = torch.randn(12)
    torch.testing.assert_close(
        kernels.rms_norm(x, w, backend=backend), F.rms_norm(x, w), atol=1e-6, rtol=1e-6
    )
    empty = torch.randn(0, 4, 12, requires_grad=True)
    y = kernels.rms_norm(empty, w, backend=backend)
    assert y.shape == (0, 4, 12)
    y.sum().backward()
    assert empty.grad.shape == empty.shape


@pytest.mark.parametrize("dtype", DTYPES)
def test_norm_modules_use_the_kernels_and_keep_functional_numerics(dtype, monkeypatch):
    from normlab.norms.layer import LayerNorm
    from normlab.norms.rms import RMSNorm

    calls = []
    for name in ("rms_norm", "layer_norm"):
        orig = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _o=orig, _n=name, **k: (
            calls.append(_n), _o(*a, **k))[1])
    x = (torch.randn(3, 7, 33) * 2 + 0.5).to(dtype)
    ln, rms = LayerNorm(33, dtype=dtype), RMSNorm(33, bias=True, dtype=dtype)
    with torch.no_grad():
        for p in (*ln.parameters(), *rms.parameters()):
            p.normal_()
    torch.testing.assert_close(
        ln(x), F.layer_norm(x, ln.weight, ln.bias, ln.eps), atol=TOL[dtype][0], rtol=TOL[dtype][1]
    )
    torch.testing.assert_close(
        rms(x), F.rms_norm(x, rms.weight, rms.eps, bias=rms.bias),
        atol=TOL[dtype][0], rtol=TOL[dtype][1],
    )
    assert calls == ["layer_norm", "rms_norm"]
    outside = RMSNorm(33, eps=1e-8, eps_outside=True, dtype=dtype)
    torch.testing.assert_close(outside(x), F.rms_norm(x, outside.weight, 1e-8, eps_outside=True))
    assert calls == ["layer_norm", "rms_norm"]
