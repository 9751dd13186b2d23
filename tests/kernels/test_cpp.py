"""The C++ CPU kernels: the build, their custom ops, the tanh they use, and the fallback.

Their numerics against the references run with the other CPU backends in test_backends.py.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from tests.kernels.cases import call, leaf_names, make_inputs, ref_dyt, reference

from normlab import kernels
from normlab.kernels import cpu

needs_cpp = pytest.mark.skipif(not cpu.available(), reason=cpu.reason() or "built")


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler on this machine")
def test_installed_with_a_compiler_means_built():
    assert cpu.available(), cpu.reason()


@needs_cpp
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("rms", [False, True])
def test_opcheck_norm_fwd(residual, rms):
    x = torch.randn(5, 24, requires_grad=True)
    r = torch.randn(5, 24, requires_grad=True) if residual else None
    w = torch.randn(24, requires_grad=True)
    b = None if rms else torch.randn(24, requires_grad=True)
    torch.library.opcheck(torch.ops.normlab_cpu.norm_fwd.default, (x, r, w, b, 1e-5, rms))


@needs_cpp
def test_opcheck_dyt_and_backward_ops():
    ops = torch.ops.normlab_cpu
    x = torch.randn(4, 10, requires_grad=True)
    a = torch.tensor(0.5, requires_grad=True)
    w = torch.randn(10, requires_grad=True)
    torch.library.opcheck(ops.dyt_fwd.default, (x, a, w, None))
    xd, wd, dy = x.detach(), w.detach(), torch.randn(4, 10)
    _, _, mean, rstd = ops.norm_fwd(xd, None, wd, None, 1e-5, False)
    for need in (True, False):
        torch.library.opcheck(
            ops.norm_bwd.default, (dy, dy, xd, wd, mean, rstd, need, not need, False)
        )
        torch.library.opcheck(ops.dyt_bwd.default, (dy, xd, a.detach(), None, need, False, need))


@needs_cpp
def test_compiles_with_the_ops_in_the_graph_forward_and_backward():
    # AOTAutograd traces the autograd rules registered in C++ through the Python fakes.
    points = cpu.entry_points()
    norm, dyt = points.norm, points.dyt
    w = torch.randn(32, requires_grad=True)
    alpha = torch.tensor(0.7, requires_grad=True)
    r = torch.randn(2, 3, 32, requires_grad=True)

    def f(x):
        y, h = norm(x, r, w, None, 1e-6, rms=True)
        return y + dyt(h, alpha, w, None)

    x = torch.randn(2, 3, 32, requires_grad=True)
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    grads = [torch.autograd.grad(g(x).square().sum(), (x, r, w, alpha)) for g in (compiled, f)]
    torch.testing.assert_close(compiled(x), f(x))
    torch.testing.assert_close(grads[0], grads[1])


@needs_cpp
@pytest.mark.parametrize("gate", [False, True])
@pytest.mark.parametrize("norm_before_gate", [False, True])
def test_opcheck_gated_and_derf_ops(gate, norm_before_gate):
    ops = torch.ops.normlab_cpu
    x = torch.randn(3, 12, requires_grad=True)
    z = torch.randn(3, 12, requires_grad=True) if gate else None
    w = torch.randn(12, requires_grad=True)
    torch.library.opcheck(ops.gated_fwd.default, (x, z, w, 1e-5, 4, norm_before_gate))
    zd = None if z is None else z.detach()
    _, rstd = ops.gated_fwd(x.detach(), zd, w.detach(), 1e-5, 4, norm_before_gate)
    dy = torch.randn(3, 12)
    for need in (True, False):
        torch.library.opcheck(
            ops.gated_bwd.default, (dy, x.detach(), zd, w.detach(), rstd, 4, norm_before_gate, need)
        )
    a, s = torch.tensor(0.5, requires_grad=True), torch.tensor(0.1, requires_grad=True)
    torch.library.opcheck(ops.derf_fwd.default, (x, a, s, w if gate else None, None))
    torch.library.opcheck(
        ops.derf_bwd.default, (dy, x.detach(), a.detach(), s.detach(), w.detach(), gate, True,
                               not gate, True)
    )


@needs_cpp
def test_the_ops_take_any_leading_shape_as_rows():
    ops = torch.ops.normlab_cpu
    x, w = torch.randn(2, 3, 5, 16), torch.randn(16)
    y, _, _, rstd = ops.norm_fwd(x, None, w, None, 1e-6, True)
    y_rows, _, _, rstd_rows = ops.norm_fwd(x.reshape(30, 16), None, w, None, 1e-6, True)
    assert y.shape == x.shape and rstd.shape == (30,)
    assert torch.equal(y.reshape(30, 16), y_rows) and torch.equal(rstd, rstd_rows)
    with pytest.raises(RuntimeError, match="contiguous CPU tensor of shape"):
        ops.dyt_fwd(x.transpose(0, 1), torch.tensor(0.5), w, None)


# α = 1 is the plain rational; the AVX2 loops fold other α into its coefficients for |α| in
# [2⁻⁸, 2⁸] (both ends included here); 2⁻⁹ and 300 take the plain loops.
FLOAT_ALPHAS = [1.0, 0.7, -0.5, 2.0**-8, 2.0**8, 2.0**-9, 300.0]


@needs_cpp
@pytest.mark.parametrize("alpha", FLOAT_ALPHAS)
def test_float32_tanh_within_a_few_ulp_and_nan_propagates(alpha):
    z = torch.cat([
        torch.linspace(-12, 12, 200_001),
        torch.tensor([0.0, -0.0, 1e-30, -1e-38, 1e-3, 9.0, 1e4, float("inf"), -float("inf")]),
    ])
    x = (z / alpha).float()
    t = kernels.dyt(x, alpha, backend="cpp")
    exact = torch.tanh(alpha * x.double())
    rel = (t.double() - exact).abs() / exact.abs().clamp_min(1e-300)
    nonzero = exact != 0
    assert rel[nonzero].max() < 6 * 2.0**-24  # 6 ulp of float32
    assert torch.equal(t[exact == 0], x[exact == 0])
    nan = kernels.dyt(torch.tensor([[1.0, float("nan"), -2.0]]), alpha, backend="cpp")
    assert nan.isnan().tolist() == [[False, True, False]]


@needs_cpp
@pytest.mark.parametrize("alpha", FLOAT_ALPHAS)
@pytest.mark.parametrize("d", [1, 7, 16, 45])
def test_float32_dyt_on_every_path_matches_the_reference(alpha, d):
    # d = 45: two lines of 16, then eight lanes (a full mask), then 5 masked ones. 800 rows on
    # two threads: at d = 45 the backward sums two chunks of rows. x is scaled by 1/|α| so that
    # α·x stays in tanh's curved part at every α.
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        inputs = make_inputs("dyt", (800, d), torch.float32)
        inputs["x"] = (inputs["x"].detach() / abs(alpha)).requires_grad_()
        inputs["alpha"] = torch.tensor(alpha, requires_grad=True)
        out = call("dyt", inputs, "cpp")[0]
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        leaves = [inputs[k] for k in ("x", "alpha", "weight", "bias")]
        got = torch.autograd.grad(out, leaves, g, retain_graph=True)
        (dx_alone,) = torch.autograd.grad(out, [inputs["x"]], g)  # no parameter sums
    finally:
        torch.set_num_threads(old)
    ref = ref_dyt(inputs["x"], inputs["alpha"], inputs["weight"], inputs["bias"])
    torch.testing.assert_close(out.double(), ref, atol=2e-6, rtol=2e-6)
    want = torch.autograd.grad(ref, leaves, g.double())
    # dx = g·w·α·(1 − t²) grows with α. The parameter gradients sum float32 terms of both
    # signs over the rows: their error is bounded by the sum of the terms' magnitudes.
    x, w, g64 = inputs["x"].double(), inputs["weight"].double(), g.double()
    t = torch.tanh(alpha * x)
    magnitude = {
        "alpha": (g64 * w * x * (1 - t * t)).abs().sum(),
        "weight": (g64 * t).abs().sum(0).max(),
        "bias": g64.abs().sum(0).max(),
    }
    atol = {"x": 1e-5 * max(1.0, abs(alpha)), **{k: 1e-6 * v.item() for k, v in magnitude.items()}}
    for name, a, b in zip(("x", "alpha", "weight", "bias"), got, want, strict=True):
        torch.testing.assert_close(a.double(), b.double(), atol=atol[name], rtol=1e-5)
    assert torch.equal(dx_alone, got[0])


@needs_cpp
def test_nan_in_a_row_reaches_the_norm_outputs_and_gradients():
    x = torch.randn(3, 16)
    x[1, 4] = float("nan")
    x.requires_grad_()
    y = kernels.rms_norm(x, torch.ones(16), backend="cpp")
    assert y[1].isnan().all() and not y[[0, 2]].isnan().any()
    y.sum().backward()
    assert x.grad[1].isnan().any() and not x.grad[[0, 2]].isnan().any()


@needs_cpp
@pytest.mark.parametrize("op", ["dyt", "derf", "gated_rms_norm", "gated_rms_norm_before"])
@pytest.mark.parametrize("threads", [1, 2])
def test_parameter_gradients_sum_over_every_chunk(threads, op):
    # Many rows: the backward splits them into one partial sum per thread.
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        inputs = make_inputs(op, (1000, 40), torch.float64)
        (y,) = call(op, inputs, "cpp")
        g = torch.randn_like(y)
        leaves = [inputs[k] for k in leaf_names(inputs)]
        got = torch.autograd.grad(y, leaves, g)
        want = torch.autograd.grad(reference(op, inputs)[0], leaves, g)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    finally:
        torch.set_num_threads(old)


@needs_cpp
@pytest.mark.parametrize("op", ["rms_norm", "dyt", "add_layer_norm", "derf", "gated_rms_norm"])
def test_gradients_of_any_subset_of_inputs(op):
    # The backward skips the parameter sums nobody asked for; what it returns is unchanged.
    inputs = make_inputs(op, (6, 40), torch.float64)
    out = call(op, inputs, "cpp")[0]
    g = torch.randn_like(out)
    names = [k for k, v in inputs.items() if v is not None]
    full = dict(zip(names, torch.autograd.grad(out, [inputs[k] for k in names], g,
                                                retain_graph=True), strict=True))
    for k in names:
        (alone,) = torch.autograd.grad(out, [inputs[k]], g, retain_graph=True)
        torch.testing.assert_close(alone, full[k], atol=1e-12, rtol=1e-12)


def test_cpp_backend_refuses_what_it_cannot_run(monkeypatch):
    if cpu.available():
        with pytest.raises(ValueError, match="runs on CPU tensors"):
            kernels.rms_norm(torch.randn(2, 4, device="meta"), backend="cpp")
    monkeypatch.setattr(cpu, "_load", lambda: "the C++ kernels are not built")
    with pytest.raises(RuntimeError, match="not built; use backend='torch'"):
        kernels.rms_norm(torch.randn(2, 4), backend="cpp")
    x = torch.randn(2, 4)
    torch.testing.assert_close(kernels.rms_norm(x), kernels.rms_norm(x, backend="torch"))
