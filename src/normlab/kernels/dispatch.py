"""One dispatch point per op: validate, pick the backend, run.

    y = rms_norm(x, weight, bias=None, eps=1e-6, backend=None)
    y = layer_norm(x, weight, bias, eps=1e-5, backend=None)
    y = dyt(x, alpha, weight, bias, backend=None)
    y, h = add_rms_norm(x, residual, weight, bias=None, eps=1e-6, backend=None)   # h = x + residual
    y, h = add_layer_norm(x, residual, weight, bias, eps=1e-5, backend=None)

`x` has any leading shape (..., D); float16/bfloat16/float32/float64 (float64 never goes to
Triton); `weight`/`bias` are optional (D,) tensors. Every op is differentiable in every input.
The numerics are those of `normlab.functional`: statistics in float32 for half inputs,
the output in the input dtype. The residual ops return the new residual h = x + residual
(rounded to the input dtype) and normalize that rounded h, as a pre-norm block needs.
See `normlab.kernels.backend` for how the backend is chosen. "cpp" and "triton" run the
compiled kernels through the same two entry points, `norm` and `dyt` (normlab.kernels.op_rules),
which take x of any leading shape as it is; the "torch" backend works on x flattened to (M, D).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from normlab.kernels import cpu, reference
from normlab.kernels import torch_backend as fast
from normlab.kernels.backend import requested_backend, triton_available, triton_interpreted

_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_TRITON_MAX_DIM = 65536


def _check(op: str, x: Tensor, **params: Tensor | None) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{op}: x must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < 1 or x.shape[-1] < 1:
        raise ValueError(f"{op}: x must have shape (..., D) with D >= 1, got {tuple(x.shape)}")
    d = x.shape[-1]
    for name, p in params.items():
        if p is None:
            continue
        if not isinstance(p, Tensor) or not p.is_floating_point():
            raise TypeError(f"{op}: {name} must be a floating-point tensor or None")
        if p.shape != (d,):
            raise ValueError(
                f"{op}: {name} must have shape ({d},) to match x's last dimension, "
                f"got {tuple(p.shape)}"
            )
        if p.device != x.device:
            raise ValueError(f"{op}: {name} is on {p.device} but x is on {x.device}; move it")


def _check_eps(op: str, eps: float) -> float:
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"{op}: eps must be a float >= 0, got {eps!r}")
    return float(eps)


def _check_residual(op: str, x: Tensor, residual: Tensor) -> None:
    if not isinstance(residual, Tensor):
        raise TypeError(f"{op}: residual must be a torch.Tensor, got {type(residual).__name__}")
    if residual.shape != x.shape or residual.dtype != x.dtype:
        raise ValueError(
            f"{op}: residual must match x in shape and dtype, got {tuple(residual.shape)} "
            f"{residual.dtype} vs {tuple(x.shape)} {x.dtype}; cast it first"
        )


def _resolve(op: str, backend: str | None, x: Tensor) -> str:
    name = requested_backend(backend)
    if name == "auto":
        if torch.compiler.is_compiling():
            # under torch.compile the plain formulas (autograd's own backward) trace into the
            # graph, where the compiler fuses them; the C++ and Triton entry points and the
            # hand-written backward of "torch" would break the graph
            return "reference"
        if x.device.type == "cpu":
            # ATen's own LayerNorm is as fast as the C++ kernel (docs/kernels.md): keep it.
            return "cpp" if op != "layer_norm" and cpu.available() else "torch"
        use_triton = (
            x.is_cuda and triton_available() and x.dtype in _TRITON_DTYPES
            and x.shape[-1] <= _TRITON_MAX_DIM
        )
        return "triton" if use_triton else "torch"
    if name == "cpp":
        if x.device.type != "cpu":
            raise ValueError(f"{op}: backend='cpp' runs on CPU tensors; x is on {x.device}")
        if not cpu.available():
            raise RuntimeError(f"{op}: backend='cpp': {cpu.reason()}; use backend='torch'")
    if name == "triton":
        if not triton_available():
            raise RuntimeError(
                f"{op}: backend='triton' needs the triton package (pip install normlab[gpu]); "
                "use backend='torch' instead"
            )
        if not x.is_cuda and not triton_interpreted():
            raise ValueError(
                f"{op}: backend='triton' runs on CUDA tensors (or on CPU under "
                f"TRITON_INTERPRET=1); x is on {x.device}"
            )
        if x.dtype not in _TRITON_DTYPES or x.shape[-1] > _TRITON_MAX_DIM:
            raise ValueError(
                f"{op}: the Triton kernels take float16/bfloat16/float32 rows of at most "
                f"{_TRITON_MAX_DIM} channels, got {x.dtype} with D={x.shape[-1]}; "
                "use backend='torch'"
            )
    return name


def _compiled(name: str):
    """The `norm`/`dyt` entry points of the "cpp" or "triton" ops."""
    if name == "cpp":
        return cpu.entry_points()
    from normlab.kernels.triton import ops  # imports triton: only when a call needs it

    return ops.norm, ops.dyt


def _rows(x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-1]).contiguous()


def _norm(
    op: str, kind: str, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
    backend: str | None,
) -> Tensor:
    _check(op, x, weight=weight, bias=bias)
    eps = _check_eps(op, eps)
    name = _resolve(op, backend, x)
    if name == "reference":
        return getattr(reference, kind)(x, weight, bias, eps)
    if name in ("cpp", "triton"):
        norm, _ = _compiled(name)
        y, _ = norm(x.contiguous(), None, weight, bias, eps, rms=kind == "rms_norm")
        return y
    return getattr(fast, kind)(_rows(x), weight, bias, eps).view(x.shape)


def _add_norm(
    op: str, kind: str, x: Tensor, residual: Tensor, weight: Tensor | None,
    bias: Tensor | None, eps: float, backend: str | None,
) -> tuple[Tensor, Tensor]:
    _check(op, x, weight=weight, bias=bias)
    _check_residual(op, x, residual)
    eps = _check_eps(op, eps)
    name = _resolve(op, backend, x)
    if name in ("cpp", "triton"):
        norm, _ = _compiled(name)
        return norm(x.contiguous(), residual.contiguous(), weight, bias, eps,
                    rms=kind == "rms_norm")
    h = x + residual
    norm: Callable = getattr(reference if name == "reference" else fast, kind)
    if name == "reference":
        return norm(h, weight, bias, eps), h
    return norm(_rows(h), weight, bias, eps).view(x.shape), h


def rms_norm(
    x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-6,
    *, backend: str | None = None,
) -> Tensor:
    """RMSNorm y = x / sqrt(mean(x²) + eps) · weight (+ bias) over the last axis.

    eps sits inside the root, as LLaMA and `torch.nn.RMSNorm` (Zhang & Sennrich, "Root Mean
    Square Layer Normalization", NeurIPS 2019, put it outside: use `normlab.functional`
    with `eps_outside=True` for that variant).
    """
    return _norm("rms_norm", "rms_norm", x, weight, bias, eps, backend)


def layer_norm(
    x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5,
    *, backend: str | None = None,
) -> Tensor:
    """LayerNorm y = (x − mean) / sqrt(var + eps) · weight + bias, biased variance over the last
    axis (Ba, Kiros, Hinton, "Layer Normalization", 2016)."""
    return _norm("layer_norm", "layer_norm", x, weight, bias, eps, backend)


def dyt(
    x: Tensor, alpha: Tensor | float, weight: Tensor | None = None, bias: Tensor | None = None,
    *, backend: str | None = None,
) -> Tensor:
    """Dynamic Tanh y = weight · tanh(alpha · x) + bias with a scalar alpha (Zhu, Chen, He,
    LeCun, Liu, "Transformers without Normalization", CVPR 2025)."""
    _check("dyt", x, weight=weight, bias=bias)
    if isinstance(alpha, Tensor):
        if alpha.numel() != 1 or not alpha.is_floating_point():
            raise ValueError(
                f"dyt: alpha must be a one-element floating-point tensor or a float, got shape "
                f"{tuple(alpha.shape)} dtype {alpha.dtype}"
            )
    elif not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        raise TypeError(f"dyt: alpha must be a float or a one-element tensor, got {alpha!r}")
    name = _resolve("dyt", backend, x)
    if name == "reference":
        return reference.dyt(x, alpha, weight, bias)
    if name in ("cpp", "triton"):
        if not isinstance(alpha, Tensor):
            alpha = torch.tensor(float(alpha), device=x.device)
        _, compiled_dyt = _compiled(name)
        return compiled_dyt(x.contiguous(), alpha, weight, bias)
    return fast.dyt(_rows(x), alpha, weight, bias).view(x.shape)


def add_rms_norm(
    x: Tensor, residual: Tensor, weight: Tensor | None = None, bias: Tensor | None = None,
    eps: float = 1e-6, *, backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    """(rms_norm(h), h) with h = x + residual: a pre-norm block's residual add and next norm."""
    return _add_norm("add_rms_norm", "rms_norm", x, residual, weight, bias, eps, backend)


def add_layer_norm(
    x: Tensor, residual: Tensor, weight: Tensor | None = None, bias: Tensor | None = None,
    eps: float = 1e-5, *, backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    """(layer_norm(h), h) with h = x + residual."""
    return _add_norm("add_layer_norm", "layer_norm", x, residual, weight, bias, eps, backend)
