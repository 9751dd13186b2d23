"""The Triton kernels in Triton's CPU interpreter (tiny shapes: it is slow), and their custom ops.

TRITON_INTERPRET must be set before the kernels are decorated, so it is set here, before
`normlab.kernels.triton` is first imported (nothing else imports it on CPU).
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton", reason="triton is not installed (pip install normlab[gpu])")
if os.environ["TRITON_INTERPRET"] != "1" and not torch.cuda.is_available():
    pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1", allow_module_level=True)

from tests.kernels.cases import (
    OPS,
    assert_close,
    call,
    grad_pairs,
    make_inputs,
    reference,
)

from normlab.kernels.triton import ops

DEVICE = "cuda" if torch.cuda.is_available() and os.environ["TRITON_INTERPRET"] != "1" else "cpu"


def _to_device(inputs):
    return {
        k: None if v is None else v.detach().to(DEVICE).requires_grad_() for k, v in inputs.items()
    }


def _check(op, shape, dtype, weight=True, bias=True):
    inputs = _to_device(make_inputs(op, shape, dtype, weight=weight, bias=bias))
    out = call(op, inputs, "triton")
    expected = reference(op, inputs)
    for k, (o, e) in enumerate(zip(out, expected, strict=True)):
        assert o.dtype == dtype and o.shape == shape
        assert_close(o, e, dtype, f"{op} output {k}")
    for name, g, ge in grad_pairs(out, expected, inputs):
        assert g.dtype == inputs[name].dtype
        assert_close(g, ge, dtype, f"{op} d{name}", scale=4.0)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", [(3, 7, 33), (5, 1)])
def test_triton_float32(op, shape):
    _check(op, shape, torch.float32)


@pytest.mark.parametrize("op", OPS)
def test_triton_half_types_without_params(op):
    _check(op, (2, 3, 20), torch.bfloat16, weight=False, bias=False)
    _check(op, (2, 3, 20), torch.float16, weight=True, bias=False)


@pytest.mark.slow
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 4, 1000), (37, 65)])
def test_triton_larger(op, dtype, shape):
    _check(op, shape, dtype)


def _norm_args(residual: bool, rms: bool):
    x = torch.randn(4, 12, device=DEVICE, requires_grad=True)
    res = torch.randn(4, 12, device=DEVICE, requires_grad=True) if residual else None
    w = torch.randn(12, device=DEVICE, requires_grad=True)
    b = torch.randn(12, device=DEVICE, requires_grad=True)
    return (x, res, w, b, 1e-5, rms)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("rms", [False, True])
def test_opcheck_norm_fwd(residual, rms):
    torch.library.opcheck(ops.norm_fwd, _norm_args(residual, rms))


def test_opcheck_dyt_fwd():
    x = torch.randn(3, 10, device=DEVICE, requires_grad=True)
    a = torch.tensor(0.5, device=DEVICE, requires_grad=True)
    w = torch.randn(10, device=DEVICE, requires_grad=True)
    torch.library.opcheck(ops.dyt_fwd, (x, a, w, None))


def test_opcheck_backward_ops():
    x, _, w, _, eps, _ = _norm_args(False, True)
    _, _, mean, rstd = ops.norm_fwd(x.detach(), None, w.detach(), None, eps, True)
    dy = torch.randn_like(x)
    torch.library.opcheck(
        ops.norm_bwd, (dy, None, x.detach(), w.detach(), mean, rstd, True, False, True)
    )
    a = torch.tensor(0.5, device=DEVICE)
    torch.library.opcheck(ops.dyt_bwd, (dy, x.detach(), a, w.detach(), True, True, False))


@pytest.mark.parametrize("gate", [False, True])
@pytest.mark.parametrize("norm_before_gate", [False, True])
def test_opcheck_gated_ops(gate, norm_before_gate):
    x = torch.randn(3, 12, device=DEVICE, requires_grad=True)
    z = torch.randn(3, 12, device=DEVICE, requires_grad=True) if gate else None
    w = torch.randn(12, device=DEVICE, requires_grad=True)
    torch.library.opcheck(ops.gated_fwd, (x, z, w, 1e-5, 4, norm_before_gate))
    _, rstd = ops.gated_fwd(x.detach(), None if z is None else z.detach(), w.detach(), 1e-5, 4,
                            norm_before_gate)
    assert rstd.shape == (9,)
    dy = torch.randn(3, 12, device=DEVICE)
    zd = None if z is None else z.detach()
    torch.library.opcheck(
        ops.gated_bwd, (dy, x.detach(), zd, w.detach(), rstd, 4, norm_before_gate, True)
    )


def test_opcheck_derf_ops():
    x = torch.randn(3, 10, device=DEVICE, requires_grad=True)
    a = torch.tensor(0.5, device=DEVICE, requires_grad=True)
    s = torch.tensor(0.1, device=DEVICE, requires_grad=True)
    w = torch.randn(10, device=DEVICE, requires_grad=True)
    torch.library.opcheck(ops.derf_fwd, (x, a, s, w, None))
    dy = torch.randn(3, 10, device=DEVICE)
    torch.library.opcheck(
        ops.derf_bwd, (dy, x.detach(), a.detach(), s.detach(), w.detach(), True, True, True, False)
    )


def test_fake_shapes_trace_without_running():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(6, 40)
        y, h, mean, rstd = ops.norm_fwd(x, x, None, None, 1e-6, True)
        assert (y.shape, h.shape, mean.shape, rstd.shape) == ((6, 40), (6, 40), (0,), (6,))
        y, rstd = ops.gated_fwd(x, x, None, 1e-5, 8, False)
        assert (y.shape, rstd.shape) == ((6, 40), (30,))
