"""Fake (meta) and autograd rules shared by the compiled kernels' custom ops.

The Triton ops (`normlab::*`, CUDA) and the C++ ops (`normlab_cpu::*`, CPU) have one signature:

    norm_fwd(x, residual?, weight?, bias?, eps, rms) -> (y, h, mean, rstd)
    norm_bwd(dy, dh?, x, weight?, mean, rstd, need_dw, need_db, rms) -> (dx, dw, db)
    dyt_fwd(x, alpha, weight?, bias?) -> y
    dyt_bwd(dy, x, alpha, weight?, need_dalpha, need_dw, need_db) -> (dx, dalpha, dw, db)

x is (..., D), contiguous, read as M rows of D (M the product of the leading dimensions). `h`
is x + residual (empty without a residual), `mean` is empty for RMSNorm. A parameter gradient
that is not needed comes back empty (dalpha: 0), so a kernel may skip its column sums, the
costliest part of a backward that only needs dx.
Statistics and parameter gradients are float32, float64 for float64 input (which
only the C++ ops take); the autograd rule casts parameter gradients to the parameters' dtype.
"""

from __future__ import annotations

from collections.abc import Callable

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


def register_fakes(norm_fwd, norm_bwd, dyt_fwd, dyt_bwd) -> None:
    """Register the fake (meta) rules of the four ops, which torch.compile traces with."""
    fakes = ((norm_fwd, norm_fwd_fake), (norm_bwd, norm_bwd_fake),
             (dyt_fwd, dyt_fwd_fake), (dyt_bwd, dyt_bwd_fake))
    for op, fake in fakes:
        torch.library.register_fake(op, fake)


def register(norm_fwd, norm_bwd, dyt_fwd, dyt_bwd) -> None:
    """Register the fake and autograd rules of four custom-op objects (the Triton ops); the
    backward rules call `norm_bwd` / `dyt_bwd`. The C++ ops carry the same autograd rules in
    C++ (norm_kernels.cpp) and take only the fakes from here."""
    register_fakes(norm_fwd, norm_bwd, dyt_fwd, dyt_bwd)
    torch.library.register_autograd(
        norm_fwd, _norm_backward_with(norm_bwd), setup_context=_norm_setup
    )
    torch.library.register_autograd(dyt_fwd, _dyt_backward_with(dyt_bwd), setup_context=_dyt_setup)


def _contiguous(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.contiguous()


def entry_points(norm_fwd: Callable, dyt_fwd: Callable) -> tuple[Callable, Callable]:
    """The `norm` and `dyt` functions that `normlab.kernels.dispatch` calls, over two ops:

        norm(x, residual, weight, bias, eps, *, rms) -> (y, h or None)
        dyt(x, alpha, weight, bias) -> y          (alpha a one-element tensor on x's device)
    """

    def norm(
        x: Tensor, residual: Tensor | None, weight: Tensor | None, bias: Tensor | None,
        eps: float, *, rms: bool,
    ) -> tuple[Tensor, Tensor | None]:
        y, h, _, _ = norm_fwd(x, residual, _contiguous(weight), _contiguous(bias), eps, rms)
        return y, (h if residual is not None else None)

    def dyt(x: Tensor, alpha: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
        alpha = alpha if alpha.dim() == 0 else alpha.reshape(())
        return dyt_fwd(x, alpha.contiguous(), _contiguous(weight), _contiguous(bias))

    return norm, dyt
