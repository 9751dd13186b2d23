"""Shared cases for the kernel tests: independent float64 references and a runner.

The references are written from the formulas (DyT: Zhu et al., CVPR 2025; LayerNorm: Ba et
al. 2016; RMSNorm with eps inside the root as LLaMA / torch.nn.RMSNorm), not from normlab's code.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from normlab import kernels
from normlab.kernels import cpu

# The CPU backends; "cpp" is skipped where the C++ kernels are not built.
CPP = pytest.param(
    "cpp", marks=pytest.mark.skipif(not cpu.available(), reason=cpu.reason() or "built")
)
CPU_BACKENDS = ["torch", CPP]

OPS = ("rms_norm", "layer_norm", "dyt", "add_rms_norm", "add_layer_norm")
EPS = {"rms_norm": 1e-6, "layer_norm": 1e-5, "add_rms_norm": 1e-6, "add_layer_norm": 1e-5}
# (atol, rtol) on outputs and gradients, for values of order 1.
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (4e-3, 4e-3),
    torch.bfloat16: (3e-2, 2e-2),
}


def _affine(y: Tensor, w: Tensor | None, b: Tensor | None) -> Tensor:
    if w is not None:
        y = y * w.double()
    if b is not None:
        y = y + b.double()
    return y


def ref_rms(x: Tensor, w, b, eps: float) -> Tensor:
    x = x.double()
    return _affine(x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps), w, b)


def ref_ln(x: Tensor, w, b, eps: float) -> Tensor:
    x = x.double()
    mu = x.sum(-1, keepdim=True) / x.shape[-1]
    var = ((x - mu) ** 2).sum(-1, keepdim=True) / x.shape[-1]
    return _affine((x - mu) / torch.sqrt(var + eps), w, b)


def ref_dyt(x: Tensor, alpha, w, b) -> Tensor:
    a = alpha.double() if isinstance(alpha, Tensor) else alpha
    return _affine(torch.tanh(a * x.double()), w, b)


def make_inputs(op: str, shape, dtype, *, weight=True, bias=True, seed=0, param_dtype=None):
    """Leaf tensors (requires_grad) for `op`: x[, residual], [alpha], weight, bias."""
    gen = torch.Generator().manual_seed(seed)
    d = shape[-1]
    pdt = param_dtype or dtype

    def leaf(*s, dt=dtype, scale=1.0, shift=0.0):
        t = torch.randn(s, generator=gen, dtype=torch.float64) * scale + shift
        return t.to(dt).requires_grad_()

    inputs = {"x": leaf(*shape, scale=2.0, shift=0.5)}
    if op.startswith("add_"):
        inputs["residual"] = leaf(*shape)
    if op == "dyt":
        inputs["alpha"] = leaf(dt=pdt, scale=0.2, shift=0.6)
    inputs["weight"] = leaf(d, dt=pdt, scale=0.5, shift=1.0) if weight else None
    inputs["bias"] = leaf(d, dt=pdt, scale=0.5) if bias else None
    return inputs


def call(op: str, inputs: dict, backend: str | None):
    """Outputs of `op` as a tuple (the residual ops return (y, h))."""
    fn = getattr(kernels, op)
    if op == "dyt":
        out = fn(inputs["x"], inputs["alpha"], inputs["weight"], inputs["bias"], backend=backend)
    elif op.startswith("add_"):
        out = fn(inputs["x"], inputs["residual"], inputs["weight"], inputs["bias"], EPS[op],
                 backend=backend)
    else:
        out = fn(inputs["x"], inputs["weight"], inputs["bias"], EPS[op], backend=backend)
    return out if isinstance(out, tuple) else (out,)


def reference(op: str, inputs: dict):
    """Float64 outputs of the independent references, from the (rounded) inputs."""
    x, w, b = inputs["x"], inputs["weight"], inputs["bias"]
    if op == "dyt":
        return (ref_dyt(x, inputs["alpha"], w, b),)
    if op.startswith("add_"):
        h = (x + inputs["residual"]).double()  # added in x's dtype: the rounded new residual
        norm = ref_rms if op == "add_rms_norm" else ref_ln
        return norm(h, w, b, EPS[op]), h
    return ((ref_rms if op == "rms_norm" else ref_ln)(x, w, b, EPS[op]),)


def leaf_names(inputs: dict) -> list[str]:
    """The names of the inputs that are tensors (absent parameters are None)."""
    return [k for k, v in inputs.items() if isinstance(v, Tensor)]


def grads(outputs, inputs: dict, seed: int = 1):
    """Gradients of Σ_k <g_k, out_k> w.r.t. every tensor input, for fixed random g_k."""
    gen = torch.Generator().manual_seed(seed)
    leaves = [inputs[k] for k in leaf_names(inputs)]
    loss = sum(
        (o.double() * torch.randn(o.shape, generator=gen, dtype=torch.float64)).sum()
        for o in outputs
    )
    return torch.autograd.grad(loss, leaves)


def grad_pairs(outputs, expected, inputs: dict):
    """(name, gradient from `outputs`, gradient from `expected`) for every tensor input."""
    names = leaf_names(inputs)
    return zip(names, grads(outputs, inputs), grads(expected, inputs), strict=True)


def assert_close(actual, expected, dtype, what: str, scale: float = 1.0) -> None:
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(
        actual.double(), expected.double(), atol=atol * scale, rtol=rtol * scale,
        msg=lambda m: f"{what}: {m}",
    )
