"""Fake (meta) and autograd rules shared by the compiled kernels' custom ops.

The Triton ops (`normlab::*`, CUDA) and the C++ ops (`normlab_cpu::*`, CPU) have one signature:

    norm_fwd(x, residual?, weight?, bias?, eps, rms) -> (y, h, mean, rstd)
    norm_bwd(dy, dh?, x, weight?, mean, rstd, need_dw, need_db, rms) -> (dx, dw, db)
    dyt_fwd(x, alpha, weight?, bias?) -> y
    dyt_bwd(dy, x, alpha, weight?, need_dalpha, need_dw, need_db) -> (dx, dalpha, dw, db)
    derf_fwd(x, alpha, shift, weight?, bias?) -> y
    derf_bwd(dy, x, alpha, shift, weight?, need_dalpha, need_dshift, need_dw, need_db)
        -> (dx, dalpha, dshift, dw, db)
    gated_fwd(x, gate?, weight?, eps, group_size, norm_before_gate) -> (y, rstd)
    gated_bwd(dy, x, gate?, weight?, rstd, group_size, norm_before_gate, need_dw)
        -> (dx, dgate, dw)

x is (..., D), contiguous, read as M rows of D (M the product of the leading dimensions). `h`
is x + residual (empty without a residual), `mean` is empty for RMSNorm; the gated norm's
`rstd` has one entry per group of every row (M·D/group_size), `dgate` is empty without a gate.
A parameter gradient that is not needed comes back empty (dalpha, dshift: 0), so a kernel may
skip its column sums, the costliest part of a backward that only needs dx.
Statistics and parameter gradients are float32, float64 for float64 input (which
only the C++ ops take); the autograd rule casts parameter gradients to the parameters' dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch
from torch import Tensor


def stat_dtype(x: Tensor) -> torch.dtype:
    """The dtype of statistics and parameter gradients for input `x`."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def stat_empty(x: Tensor, *shape: int) -> Tensor:
    return torch.empty(shape, device=x.device, dtype=stat_dtype(x))


def n_rows(x: Tensor) -> int:
    """M, the number of rows of D = x.shape[-1] channels."""
    return x.numel() // x.shape[-1]


def norm_fwd_fake(x, residual, weight, bias, eps, rms):
    m = n_rows(x)
    h = torch.empty_like(x) if residual is not None else x.new_empty(0)
    return torch.empty_like(x), h, stat_empty(x, 0 if rms else m), stat_empty(x, m)


def norm_bwd_fake(dy, dh, x, weight, mean, rstd, need_dw, need_db, rms):
    d = x.shape[-1]
    dw, db = stat_empty(x, d if need_dw else 0), stat_empty(x, d if need_db else 0)
    return torch.empty_like(x), dw, db


def dyt_fwd_fake(x, alpha, weight, bias):
    return torch.empty_like(x)


def dyt_bwd_fake(dy, x, alpha, weight, need_dalpha, need_dw, need_db):
    d = x.shape[-1]
    return (
        torch.empty_like(x),
        stat_empty(x),
        stat_empty(x, d if need_dw else 0),
        stat_empty(x, d if need_db else 0),
    )


def _norm_setup(ctx, inputs, output) -> None:
    x, residual, weight, bias, _, rms = inputs
    _, h, mean, rstd = output
    ctx.save_for_backward(x if residual is None else h, weight, mean, rstd)
    ctx.rms = rms
    ctx.has_residual = residual is not None
    ctx.bias_dtype = None if bias is None else bias.dtype


def _norm_backward_with(norm_bwd: Callable) -> Callable:
    def backward(ctx, dy, dh, _dmean, _drstd):
        x, weight, mean, rstd = ctx.saved_tensors
        dy = torch.zeros_like(x) if dy is None else dy.contiguous()
        dh = dh.contiguous() if ctx.has_residual and dh is not None else None
        _, _, need_dw, need_db, _, _ = ctx.needs_input_grad
        need_dw = need_dw and weight is not None
        dx, dw, db = norm_bwd(dy, dh, x, weight, mean, rstd, need_dw, need_db, ctx.rms)
        return (
            dx,
            dx if ctx.has_residual else None,
            dw.to(weight.dtype) if need_dw else None,
            db.to(ctx.bias_dtype) if need_db else None,
            None,
            None,
        )

    return backward


def _dyt_setup(ctx, inputs, output) -> None:
    x, alpha, weight, bias = inputs
    ctx.save_for_backward(x, alpha, weight)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _dyt_backward_with(dyt_bwd: Callable) -> Callable:
    def backward(ctx, dy):
        x, alpha, weight = ctx.saved_tensors
        _, need_da, need_dw, need_db = ctx.needs_input_grad
        need_dw = need_dw and weight is not None
        dx, da, dw, db = dyt_bwd(dy.contiguous(), x, alpha, weight, need_da, need_dw, need_db)
        return (
            dx,
            da.reshape(alpha.shape).to(alpha.dtype) if need_da else None,
            dw.to(weight.dtype) if need_dw else None,
            db.to(ctx.bias_dtype) if need_db else None,
        )

    return backward


def derf_fwd_fake(x, alpha, shift, weight, bias):
    return torch.empty_like(x)


def derf_bwd_fake(dy, x, alpha, shift, weight, need_dalpha, need_dshift, need_dw, need_db):
    d = x.shape[-1]
    return (
        torch.empty_like(x),
        stat_empty(x),
        stat_empty(x),
        stat_empty(x, d if need_dw else 0),
        stat_empty(x, d if need_db else 0),
    )


def gated_fwd_fake(x, gate, weight, eps, group_size, norm_before_gate):
    return torch.empty_like(x), stat_empty(x, x.numel() // group_size)


def gated_bwd_fake(dy, x, gate, weight, rstd, group_size, norm_before_gate, need_dw):
    dgate = torch.empty_like(x) if gate is not None else x.new_empty(0)
    return torch.empty_like(x), dgate, stat_empty(x, x.shape[-1] if need_dw else 0)


def _derf_setup(ctx, inputs, output) -> None:
    x, alpha, shift, weight, bias = inputs
    ctx.save_for_backward(x, alpha, shift, weight)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _derf_backward_with(derf_bwd: Callable) -> Callable:
    def backward(ctx, dy):
        x, alpha, shift, weight = ctx.saved_tensors
        _, need_da, need_ds, need_dw, need_db = ctx.needs_input_grad
        need_dw = need_dw and weight is not None
        dx, da, ds, dw, db = derf_bwd(
            dy.contiguous(), x, alpha, shift, weight, need_da, need_ds, need_dw, need_db
        )
        return (
            dx,
            da.reshape(alpha.shape).to(alpha.dtype) if need_da else None,
            ds.reshape(shift.shape).to(shift.dtype) if need_ds else None,
            dw.to(weight.dtype) if need_dw else None,
            db.to(ctx.bias_dtype) if need_db else None,
        )

    return backward


def _gated_setup(ctx, inputs, output) -> None:
    x, gate, weight, _, group_size, norm_before_gate = inputs
    ctx.save_for_backward(x, gate, weight, output[1])
    ctx.group_size, ctx.norm_before_gate = group_size, norm_before_gate


def _gated_backward_with(gated_bwd: Callable) -> Callable:
    def backward(ctx, dy, _drstd):
        x, gate, weight, rstd = ctx.saved_tensors
        _, _, need_dw, _, _, _ = ctx.needs_input_grad
        need_dw = need_dw and weight is not None
        dy = torch.zeros_like(x) if dy is None else dy.contiguous()
        dx, dgate, dw = gated_bwd(
            dy, x, gate, weight, rstd, ctx.group_size, ctx.norm_before_gate, need_dw
        )
        return (
            dx,
            dgate if gate is not None else None,
            dw.to(weight.dtype) if need_dw else None,
            None,
            None,
            None,
        )

    return backward


@dataclass(frozen=True)
class Ops:
    """The eight custom-op objects of one backend (C++ `OpOverload`s or Triton custom ops)."""

    norm_fwd: Any
    norm_bwd: Any
    dyt_fwd: Any
    dyt_bwd: Any
    derf_fwd: Any
    derf_bwd: Any
    gated_fwd: Any
    gated_bwd: Any


_FAKES = {
    "norm_fwd": norm_fwd_fake, "norm_bwd": norm_bwd_fake, "dyt_fwd": dyt_fwd_fake,
    "dyt_bwd": dyt_bwd_fake, "derf_fwd": derf_fwd_fake, "derf_bwd": derf_bwd_fake,
    "gated_fwd": gated_fwd_fake, "gated_bwd": gated_bwd_fake,
}
# forward op -> (its backward op, setup_context, backward rule factory)
_AUTOGRAD = {
    "norm_fwd": ("norm_bwd", _norm_setup, _norm_backward_with),
    "dyt_fwd": ("dyt_bwd", _dyt_setup, _dyt_backward_with),
    "derf_fwd": ("derf_bwd", _derf_setup, _derf_backward_with),
    "gated_fwd": ("gated_bwd", _gated_setup, _gated_backward_with),
}


def register(ops: Ops, *, autograd: tuple[str, ...] = tuple(_AUTOGRAD)) -> None:
    """Register the fake (meta) rules of all eight ops, which torch.compile traces with, and
    the autograd rules of the forward ops named in `autograd`. The Triton ops take every rule
    from here; the C++ ops carry the rules of norm_fwd and dyt_fwd in C++ (norm_kernels.cpp),
    so that an eager call pays no Python, and take the others from here."""
    for field in fields(ops):
        torch.library.register_fake(getattr(ops, field.name), _FAKES[field.name])
    for name in autograd:
        backward_op, setup, rule = _AUTOGRAD[name]
        torch.library.register_autograd(
            getattr(ops, name), rule(getattr(ops, backward_op)), setup_context=setup
        )


def _contiguous(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.contiguous()


def _scalar(t: Tensor) -> Tensor:
    return (t if t.dim() == 0 else t.reshape(())).contiguous()


class EntryPoints(NamedTuple):
    """The functions that `normlab.kernels.dispatch` calls, over one backend's ops:

        norm(x, residual, weight, bias, eps, *, rms) -> (y, h or None)
        dyt(x, alpha, weight, bias) -> y          (alpha a one-element tensor on x's device)
        derf(x, alpha, shift, weight, bias) -> y  (alpha, shift: one-element tensors)
        gated_rms_norm(x, gate, weight, group_size, eps, *, norm_before_gate) -> y
    """

    norm: Callable
    dyt: Callable
    derf: Callable
    gated_rms_norm: Callable


def entry_points(ops: Ops) -> EntryPoints:
    """The `EntryPoints` over `ops`."""

    def norm(
        x: Tensor, residual: Tensor | None, weight: Tensor | None, bias: Tensor | None,
        eps: float, *, rms: bool,
    ) -> tuple[Tensor, Tensor | None]:
        y, h, _, _ = ops.norm_fwd(x, residual, _contiguous(weight), _contiguous(bias), eps, rms)
        return y, (h if residual is not None else None)

    def dyt(x: Tensor, alpha: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
        return ops.dyt_fwd(x, _scalar(alpha), _contiguous(weight), _contiguous(bias))

    def derf(
        x: Tensor, alpha: Tensor, shift: Tensor, weight: Tensor | None, bias: Tensor | None
    ) -> Tensor:
        return ops.derf_fwd(
            x, _scalar(alpha), _scalar(shift), _contiguous(weight), _contiguous(bias)
        )

    def gated_rms_norm(
        x: Tensor, gate: Tensor | None, weight: Tensor | None, group_size: int, eps: float,
        *, norm_before_gate: bool,
    ) -> Tensor:
        y, _ = ops.gated_fwd(x, gate, _contiguous(weight), eps, group_size, norm_before_gate)
        return y

    return EntryPoints(norm, dyt, derf, gated_rms_norm)
