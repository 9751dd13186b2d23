"""The Triton kernels as `torch.library` custom ops, with fake (meta) and autograd rules.

    normlab::norm_fwd(x, residual?, weight?, bias?, eps, rms) -> (y, h, mean, rstd)
    normlab::norm_bwd(dy, dh?, x, weight?, mean, rstd, has_bias, rms) -> (dx, dw32, db32)
    normlab::dyt_fwd(x, alpha, weight?, bias?) -> y
    normlab::dyt_bwd(dy, x, alpha, weight?, has_bias) -> (dx, dalpha32, dw32, db32)

Inputs are (M, D) rows, contiguous. `h` is x + residual (empty without a residual), `mean` is
empty for RMSNorm; parameter gradients come back in float32 and the autograd rule casts them.
Being custom ops, torch.compile traces them as opaque nodes and `opcheck` can test them.
Annotations stay unevaluated-free (no `from __future__ import annotations`): the schema is
inferred from them at registration.
"""

import torch
import triton
from torch import Tensor

from normlab.kernels.triton import kernels as K


def _programs(x: Tensor, n_rows: int) -> int:
    """Backward programs: a few per SM on CUDA, a handful in the CPU interpreter."""
    per_device = 4 * torch.cuda.get_device_properties(x.device).multi_processor_count \
        if x.is_cuda else 4
    return max(1, min(n_rows, per_device))


def _f32(x: Tensor, n: int, d: int | None = None) -> Tensor:
    shape = (n,) if d is None else (n, d)
    return torch.empty(shape, device=x.device, dtype=torch.float32)


@torch.library.custom_op("normlab::norm_fwd", mutates_args=())
def norm_fwd(
    x: Tensor, residual: Tensor | None, weight: Tensor | None, bias: Tensor | None,
    eps: float, rms: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    m, d = x.shape
    y = torch.empty_like(x)
    h = torch.empty_like(x) if residual is not None else x.new_empty(0)
    mean = _f32(x, 0 if rms else m)
    rstd = _f32(x, m)
    if m:
        block = K.block_size(d)
        K.norm_fwd_kernel[(m,)](
            x, x if residual is None else residual, x if weight is None else weight,
            x if bias is None else bias, y, y if residual is None else h,
            rstd if rms else mean, rstd, d, eps,
            IS_RMS=rms, HAS_RES=residual is not None, HAS_W=weight is not None,
            HAS_B=bias is not None, BLOCK=block, num_warps=K.num_warps(block),
        )
    return y, h, mean, rstd


@norm_fwd.register_fake
def _(x, residual, weight, bias, eps, rms):
    m = x.shape[0]
    h = torch.empty_like(x) if residual is not None else x.new_empty(0)
    return torch.empty_like(x), h, _f32(x, 0 if rms else m), _f32(x, m)


@torch.library.custom_op("normlab::norm_bwd", mutates_args=())
def norm_bwd(
    dy: Tensor, dh: Tensor | None, x: Tensor, weight: Tensor | None, mean: Tensor,
    rstd: Tensor, has_bias: bool, rms: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    m, d = x.shape
    dx = torch.empty_like(x)
    progs = _programs(x, m)
    dw_part = _f32(x, progs, d) if weight is not None else _f32(x, 0)
    db_part = _f32(x, progs, d) if has_bias else _f32(x, 0)
    if m:
        block = K.block_size(d)
        K.norm_bwd_kernel[(progs,)](
            dy, dy if dh is None else dh, x, x if weight is None else weight,
            rstd if rms else mean, rstd, dx, dw_part, db_part, m, d, triton.cdiv(m, progs),
            IS_RMS=rms, HAS_DH=dh is not None, HAS_W=weight is not None, HAS_B=has_bias,
            BLOCK=block, num_warps=K.num_warps(block),
        )
    dw = dw_part.sum(0) if weight is not None else _f32(x, 0)
    db = db_part.sum(0) if has_bias else _f32(x, 0)
    return dx, dw, db


@norm_bwd.register_fake
def _(dy, dh, x, weight, mean, rstd, has_bias, rms):
    d = x.shape[1]
    return (
        torch.empty_like(x), _f32(x, d if weight is not None else 0), _f32(x, d if has_bias else 0)
    )


def _norm_setup(ctx, inputs, output) -> None:
    x, residual, weight, bias, _, rms = inputs
    _, h, mean, rstd = output
    ctx.save_for_backward(x if residual is None else h, weight, mean, rstd)
    ctx.rms = rms
    ctx.has_residual = residual is not None
    ctx.bias_dtype = None if bias is None else bias.dtype


def _norm_backward(ctx, dy, dh, _dmean, _drstd):
    x, weight, mean, rstd = ctx.saved_tensors
    dy = torch.zeros_like(x) if dy is None else dy.contiguous()
    dh = dh.contiguous() if ctx.has_residual and dh is not None else None
    dx, dw, db = norm_bwd(dy, dh, x, weight, mean, rstd, ctx.bias_dtype is not None, ctx.rms)
    return (
        dx,
        dx if ctx.has_residual else None,
        None if weight is None else dw.to(weight.dtype),
        None if ctx.bias_dtype is None else db.to(ctx.bias_dtype),
        None,
        None,
    )


norm_fwd.register_autograd(_norm_backward, setup_context=_norm_setup)


@torch.library.custom_op("normlab::dyt_fwd", mutates_args=())
def dyt_fwd(x: Tensor, alpha: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    m, d = x.shape
    y = torch.empty_like(x)
    if m:
        block = K.block_size(d)
        K.dyt_fwd_kernel[(m,)](
            x, alpha, x if weight is None else weight, x if bias is None else bias, y, d,
            HAS_W=weight is not None, HAS_B=bias is not None, BLOCK=block,
            num_warps=K.num_warps(block),
        )
    return y


@dyt_fwd.register_fake
def _(x, alpha, weight, bias):
    return torch.empty_like(x)


@torch.library.custom_op("normlab::dyt_bwd", mutates_args=())
def dyt_bwd(
    dy: Tensor, x: Tensor, alpha: Tensor, weight: Tensor | None, has_bias: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    m, d = x.shape
    dx = torch.empty_like(x)
    progs = _programs(x, m)
    da_part = torch.zeros(progs, device=x.device, dtype=torch.float32)
    dw_part = _f32(x, progs, d) if weight is not None else _f32(x, 0)
    db_part = _f32(x, progs, d) if has_bias else _f32(x, 0)
    if m:
        block = K.block_size(d)
        K.dyt_bwd_kernel[(progs,)](
            dy, x, alpha, x if weight is None else weight, dx, da_part, dw_part, db_part,
            m, d, triton.cdiv(m, progs),
            HAS_W=weight is not None, HAS_B=has_bias, BLOCK=block, num_warps=K.num_warps(block),
        )
    dw = dw_part.sum(0) if weight is not None else _f32(x, 0)
    db = db_part.sum(0) if has_bias else _f32(x, 0)
    return dx, da_part.sum(), dw, db


@dyt_bwd.register_fake
def _(dy, x, alpha, weight, has_bias):
    d = x.shape[1]
    return (
        torch.empty_like(x), x.new_empty((), dtype=torch.float32),
        _f32(x, d if weight is not None else 0), _f32(x, d if has_bias else 0),
    )


def _dyt_setup(ctx, inputs, output) -> None:
    x, alpha, weight, bias = inputs
    ctx.save_for_backward(x, alpha, weight)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _dyt_backward(ctx, dy):
    x, alpha, weight = ctx.saved_tensors
    dx, da, dw, db = dyt_bwd(dy.contiguous(), x, alpha, weight, ctx.bias_dtype is not None)
    return (
        dx,
        da.reshape(alpha.shape).to(alpha.dtype),
        None if weight is None else dw.to(weight.dtype),
        None if ctx.bias_dtype is None else db.to(ctx.bias_dtype),
    )


dyt_fwd.register_autograd(_dyt_backward, setup_context=_dyt_setup)


def _contig(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.contiguous()


def norm(
    x: Tensor, residual: Tensor | None, weight: Tensor | None, bias: Tensor | None,
    eps: float, *, rms: bool,
) -> tuple[Tensor, Tensor | None]:
    """(y, h) for (M, D) rows; h = x + residual, None without a residual."""
    y, h, _, _ = norm_fwd(x, residual, _contig(weight), _contig(bias), eps, rms)
    return y, (h if residual is not None else None)


def dyt(x: Tensor, alpha: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """DyT of (M, D) rows; alpha a one-element tensor on x's device."""
    return dyt_fwd(x, alpha.reshape(()).contiguous(), _contig(weight), _contig(bias))
