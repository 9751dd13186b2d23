"""One dispatch point per op: validate, pick the backend, run.

    y = rms_norm(x, weight, bias=None, eps=1e-6, backend=None)
    y = layer_norm(x, weight, bias, eps=1e-5, backend=None)
    y = dyt(x, alpha, weight, bias, backend=None)
    y, h = add_rms_norm(x, residual, weight, bias=None, eps=1e-6, backend=None)   # h = x + residual
    y, h = add_layer_norm(x, residual, weight, bias, eps=1e-5, backend=None)
    y = derf(x, alpha, shift, weight, bias, backend=None)
    y = gated_rms_norm(x, gate, weight, group_size, eps=1e-5, norm_before_gate=False,
                       backend=None)

`zero_centered=True` (the norms and their residual forms) multiplies by 1 + weight, the 1
added in float32 before the kernel runs (Gemma's RMSNorm; `functional.zero_centered_gain`).

`x` has any leading shape (..., D); float16/bfloat16/float32/float64 (float64 never goes to
Triton); `weight`/`bias` are optional (D,) tensors. Every op is differentiable in every input.
The numerics are those of `normlab.functional`: statistics in float32 for half inputs,
the output in the input dtype. The residual ops return the new residual h = x + residual
(rounded to the input dtype) and normalize that rounded h, as a pre-norm block needs.
See `normlab.kernels.backend` for how the backend is chosen. "cpp" and "triton" run the
compiled kernels through the same entry points (`normlab.kernels.op_rules.EntryPoints`), which
take x of any leading shape as it is; the "torch" backend works on x flattened to (M, D), and
for Derf and the gated RMSNorm it is the reference formulas.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from normlab import functional as F
from normlab.kernels import cpu, op_rules, reference
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


def _check_residual(op: str, x: Tensor, residual: Tensor, what: str = "residual") -> None:
    if not isinstance(residual, Tensor):
        raise TypeError(f"{op}: {what} must be a torch.Tensor, got {type(residual).__name__}")
    if residual.shape != x.shape or residual.dtype != x.dtype:
        raise ValueError(
            f"{op}: {what} must match x in shape and dtype, got {tuple(residual.shape)} "
            f"{residual.dtype} vs {tuple(x.shape)} {x.dtype}; cast it first"
        )
    if residual.device != x.device:
        raise ValueError(f"{op}: {what} is on {residual.device} but x is on {x.device}; move it")


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


def _compiled(name: str) -> op_rules.EntryPoints:
    """The entry points of the "cpp" or "triton" ops."""
    if name == "cpp":
        return cpu.entry_points()
    from normlab.kernels.triton import ops  # imports triton: only when a call needs it

    return ops.ENTRY_POINTS


def _gain(weight: Tensor | None, zero_centered: bool) -> Tensor | None:
    return F.zero_centered_gain(weight) if zero_centered else weight


def _scalar(op: str, name: str, value: Tensor | float) -> None:
    """Check that `value` is a one-element floating-point tensor or a float."""
    if isinstance(value, Tensor):
        if value.numel() != 1 or not value.is_floating_point():
            raise ValueError(
                f"{op}: {name} must be a one-element floating-point tensor or a float, got "
                f"shape {tuple(value.shape)} dtype {value.dtype}"
            )
    elif not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be a float or a one-element tensor, got {value!r}")


def _as_tensor(value: Tensor | float, x: Tensor) -> Tensor:
    return value if isinstance(value, Tensor) else torch.tensor(float(value), device=x.device)


def _rows(x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-1]).contiguous()


def _norm(
    op: str, kind: str, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
    backend: str | None, zero_centered: bool,
) -> Tensor:
    _check(op, x, weight=weight, bias=bias)
    eps = _check_eps(op, eps)
    name = _resolve(op, backend, x)
    weight = _gain(weight, zero_centered)
    if name == "reference":
        return getattr(reference, kind)(x, weight, bias, eps)
    if name in ("cpp", "triton"):
        y, _ = _compiled(name).norm(x.contiguous(), None, weight, bias, eps,
                                    rms=kind == "rms_norm")
        return y
    return getattr(fast, kind)(_rows(x), weight, bias, eps).view(x.shape)


def _add_norm(
    op: str, kind: str, x: Tensor, residual: Tensor, weight: Tensor | None,
    bias: Tensor | None, eps: float, backend: str | None, zero_centered: bool,
) -> tuple[Tensor, Tensor]:
    _check(op, x, weight=weight, bias=bias)
    _check_residual(op, x, residual)
    eps = _check_eps(op, eps)
    name = _resolve(op, backend, x)
    weight = _gain(weight, zero_centered)
    if name in ("cpp", "triton"):
        return _compiled(name).norm(x.contiguous(), residual.contiguous(), weight, bias, eps,
                                    rms=kind == "rms_norm")
    h = x + residual
    norm: Callable = getattr(reference if name == "reference" else fast, kind)
    if name == "reference":
        return norm(h, weight, bias, eps), h
    return norm(_rows(h), weight, bias, eps).view(x.shape), h


def rms_norm(
    x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-6,
    *, zero_centered: bool = False, backend: str | None = None,
) -> Tensor:
    """RMSNorm y = x / sqrt(mean(x²) + eps) · weight (+ bias) over the last axis.

    eps sits inside the root, as LLaMA and `torch.nn.RMSNorm` (Zhang & Sennrich, "Root Mean
    Square Layer Normalization", NeurIPS 2019, put it outside: use `normlab.functional`
    with `eps_outside=True` for that variant).
    """
    return _norm("rms_norm", "rms_norm", x, weight, bias, eps, backend, zero_centered)


def layer_norm(
    x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5,
    *, zero_centered: bool = False, backend: str | None = None,
) -> Tensor:
    """LayerNorm y = (x − mean) / sqrt(var + eps) · weight + bias, biased variance over the last
    axis (Ba, Kiros, Hinton, "Layer Normalization", 2016)."""
    return _norm("layer_norm", "layer_norm", x, weight, bias, eps, backend, zero_centered)


def dyt(
    x: Tensor, alpha: Tensor | float, weight: Tensor | None = None, bias: Tensor | None = None,
    *, backend: str | None = None,
) -> Tensor:
    """Dynamic Tanh y = weight · tanh(alpha · x) + bias with a scalar alpha (Zhu, Chen, He,
    LeCun, Liu, "Transformers without Normalization", CVPR 2025)."""
    _check("dyt", x, weight=weight, bias=bias)
    _scalar("dyt", "alpha", alpha)
    name = _resolve("dyt", backend, x)
    if name == "reference":
        return reference.dyt(x, alpha, weight, bias)
    if name in ("cpp", "triton"):
        return _compiled(name).dyt(x.contiguous(), _as_tensor(alpha, x), weight, bias)
    return fast.dyt(_rows(x), alpha, weight, bias).view(x.shape)


def derf(
    x: Tensor, alpha: Tensor | float, shift: Tensor | float, weight: Tensor | None = None,
    bias: Tensor | None = None, *, backend: str | None = None,
) -> Tensor:
    """Dynamic erf y = weight · erf(alpha · x + shift) + bias with scalars alpha and shift
    (Chen, Lu, Zhu, Sun, Liu, "Stronger Normalization-Free Transformers", arXiv 2512.10938)."""
    _check("derf", x, weight=weight, bias=bias)
    _scalar("derf", "alpha", alpha)
    _scalar("derf", "shift", shift)
    name = _resolve("derf", backend, x)
    if name in ("cpp", "triton"):
        return _compiled(name).derf(
            x.contiguous(), _as_tensor(alpha, x), _as_tensor(shift, x), weight, bias
        )
    return reference.derf(x, alpha, shift, weight, bias)


def gated_rms_norm(
    x: Tensor, gate: Tensor | None, weight: Tensor | None, group_size: int, eps: float = 1e-5,
    *, norm_before_gate: bool = False, backend: str | None = None,
) -> Tensor:
    """Gated, grouped RMSNorm over groups of `group_size` channels (Mamba-2, Qwen3-Next):
    RMSNorm_g(x ⊙ silu(gate)) ⊙ weight, or RMSNorm_g(x) ⊙ weight ⊙ silu(gate) with
    `norm_before_gate`; `gate` None means no gate (`functional.gated_rms_norm`)."""
    _check("gated_rms_norm", x, weight=weight)
    if gate is not None:
        _check_residual("gated_rms_norm", x, gate, what="gate")
    F.check_group_size("gated_rms_norm", x.shape[-1], group_size)
    eps = _check_eps("gated_rms_norm", eps)
    name = _resolve("gated_rms_norm", backend, x)
    if name in ("cpp", "triton"):
        return _compiled(name).gated_rms_norm(
            x.contiguous(), None if gate is None else gate.contiguous(), weight, group_size,
            eps, norm_before_gate=norm_before_gate,
        )
    return reference.gated_rms_norm(x, gate, weight, group_size, eps, norm_before_gate)


def add_rms_norm(
    x: Tensor, residual: Tensor, weight: Tensor | None = None, bias: Tensor | None = None,
    eps: float = 1e-6, *, zero_centered: bool = False, backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    """(rms_norm(h), h) with h = x + residual: a pre-norm block's residual add and next norm."""
    return _add_norm(
        "add_rms_norm", "rms_norm", x, residual, weight, bias, eps, backend, zero_centered
    )


def add_layer_norm(
    x: Tensor, residual: Tensor, weight: Tensor | None = None, bias: Tensor | None = None,
    eps: float = 1e-5, *, zero_centered: bool = False, backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    """(layer_norm(h), h) with h = x + residual."""
    return _add_norm(
        "add_layer_norm", "layer_norm", x, residual, weight, bias, eps, backend, zero_centered
    )
