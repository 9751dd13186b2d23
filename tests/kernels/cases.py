"""Shared cases for the kernel tests: independent float64 references and a runner.

The references are written from the formulas (DyT: Zhu et al., CVPR 2025; LayerNorm: Ba et
al. 2016; RMSNorm with eps inside the root as LLaMA / torch.nn.RMSNorm; Gemma's zero-centred
RMSNorm x/rms(x)·(1 + w); Derf: Chen et al. 2025; the gated RMSNorm of Mamba-2, over groups),
not from normlab's code.
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

OPS = (
    "rms_norm", "layer_norm", "dyt", "add_rms_norm", "add_layer_norm",
    "zero_centered_rms_norm", "derf", "gated_rms_norm", "gated_rms_norm_before",
)
EPS = {"rms_norm": 1e-6, "layer_norm": 1e-5, "add_rms_norm": 1e-6, "add_layer_norm": 1e-5,
       "zero_centered_rms_norm": 1e-6, "gated_rms_norm": 1e-5, "gated_rms_norm_before": 1e-5}
GATED = ("gated_rms_norm", "gated_rms_norm_before")
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


def ref_derf(x: Tensor, alpha, shift, w, b) -> Tensor:
    return _affine(torch.erf(alpha.double() * x.double() + shift.double()), w, b)


def group_size(d: int) -> int:
    """The gated cases' group: D over its smallest prime factor (one group when D is prime)."""
    factor = next((f for f in range(2, d + 1) if d % f == 0), 1)
    return d // factor if factor < d else d


def ref_gated(x: Tensor, z: Tensor, w, size: int, eps: float, norm_before_gate: bool) -> Tensor:
    x, z = x.double(), z.double()
    gate = z / (1 + torch.exp(-z))
    u = x if norm_before_gate else x * gate
    ug = u.unflatten(-1, (-1, size))
    y = (ug / torch.sqrt((ug * ug).mean(-1, keepdim=True) + eps)).flatten(-2)
    y = _affine(y, w, None)
    return y * gate if norm_before_gate else y


def make_inputs(op: str, shape, dtype, *, weight=True, bias=True, seed=0, param_dtype=None):
    """Leaf tensors (requires_grad) for `op`: x[, residual | gate], [alpha, shift], weight,
    bias (the gated norm has none)."""
    gen = torch.Generator().manual_seed(seed)
    d = shape[-1]
    pdt = param_dtype or dtype

    def leaf(*s, dt=dtype, scale=1.0, shift=0.0):
        t = torch.randn(s, generator=gen, dtype=torch.float64) * scale + shift
        return t.to(dt).requires_grad_()

    inputs = {"x": leaf(*shape, scale=2.0, shift=0.5)}
    if op.startswith("add_"):
        inputs["residual"] = leaf(*shape)
    if op in GATED:
        inputs["gate"] = leaf(*shape, scale=2.0)
    if op in ("dyt", "derf"):
        inputs["alpha"] = leaf(dt=pdt, scale=0.2, shift=0.6)
    if op == "derf":
        inputs["shift"] = leaf(dt=pdt, scale=0.3)
    # zero-centred: the stored w is small, the gain 1 + w about 1 as the other ops' weights
    centre = 0.0 if op == "zero_centered_rms_norm" else 1.0
    inputs["weight"] = leaf(d, dt=pdt, scale=0.5, shift=centre) if weight else None
    if op not in GATED:
        inputs["bias"] = leaf(d, dt=pdt, scale=0.5) if bias else None
    return inputs


def call(op: str, inputs: dict, backend: str | None):
    """Outputs of `op` as a tuple (the residual ops return (y, h))."""
    x, w = inputs["x"], inputs["weight"]
    if op in GATED:
        out = kernels.gated_rms_norm(x, inputs["gate"], w, group_size(x.shape[-1]), EPS[op],
                                     norm_before_gate=op == "gated_rms_norm_before",
                                     backend=backend)
        return (out,)
    if op == "zero_centered_rms_norm":
        return (kernels.rms_norm(x, w, inputs["bias"], EPS[op], zero_centered=True,
                                 backend=backend),)
    fn = getattr(kernels, op)
    if op == "dyt":
        out = fn(inputs["x"], inputs["alpha"], inputs["weight"], inputs["bias"], backend=backend)
    elif op == "derf":
        out = fn(x, inputs["alpha"], inputs["shift"], w, inputs["bias"], backend=backend)
    elif op.startswith("add_"):
        out = fn(inputs["x"], inputs["residual"], inputs["weight"], inputs["bias"], EPS[op],
                 backend=backend)
    else:
        out = fn(inputs["x"], inputs["weight"], inputs["bias"], EPS[op], backend=backend)
    return out if isinstance(out, tuple) else (out,)


def reference(op: str, inputs: dict):
    """Float64 outputs of the independent references, from the (rounded) inputs."""
    x, w, b = inputs["x"], inputs["weight"], inputs.get("bias")
    if op in GATED:
        return (ref_gated(x, inputs["gate"], w, group_size(x.shape[-1]), EPS[op],
                          op == "gated_rms_norm_before"),)
    if op == "zero_centered_rms_norm":
        return (ref_rms(x, None if w is None else 1 + w.double(), b, EPS[op]),)
    if op == "derf":
        return (ref_derf(x, inputs["alpha"], inputs["shift"], w, b),)
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
