"""The Triton kernels as `torch.library` custom ops, with fake (meta) and autograd rules.

    normlab::norm_fwd(x, residual?, weight?, bias?, eps, rms) -> (y, h, mean, rstd)
    normlab::norm_bwd(dy, dh?, x, weight?, mean, rstd, need_dw, need_db, rms) -> (dx, dw32, db32)
    normlab::dyt_fwd(x, alpha, weight?, bias?) -> y
    normlab::dyt_bwd(dy, x, alpha, weight?, need_dalpha, need_dw, need_db)
        -> (dx, dalpha32, dw32, db32)
    normlab::derf_fwd / derf_bwd, normlab::gated_fwd / gated_bwd   (op_rules gives all eight)

The fake and autograd rules are `normlab.kernels.op_rules`, shared with the C++ CPU ops.
Being custom ops, torch.compile traces them as opaque nodes and `opcheck` can test them.
Annotations stay unevaluated-free (no `from __future__ import annotations`): the schema is
inferred from them at registration.
"""

import torch
import triton
from torch import Tensor

from normlab.kernels import op_rules
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
    m, d = op_rules.n_rows(x), x.shape[-1]
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
            HAS_B=bias is not None, BLOCK=block, **K.launch_options(block),
        )
    return y, h, mean, rstd


@torch.library.custom_op("normlab::norm_bwd", mutates_args=())
def norm_bwd(
    dy: Tensor, dh: Tensor | None, x: Tensor, weight: Tensor | None, mean: Tensor,
    rstd: Tensor, need_dw: bool, need_db: bool, rms: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    m, d = op_rules.n_rows(x), x.shape[-1]
    dx = torch.empty_like(x)
    progs = _programs(x, m)
    dw_part = _f32(x, progs, d) if weight is not None else _f32(x, 0)
    db_part = _f32(x, progs, d) if need_db else _f32(x, 0)
    if m:
        block = K.block_size(d)
        K.norm_bwd_kernel[(progs,)](
            dy, dy if dh is None else dh, x, x if weight is None else weight,
            rstd if rms else mean, rstd, dx, dw_part, db_part, m, d, triton.cdiv(m, progs),
            IS_RMS=rms, HAS_DH=dh is not None, HAS_W=weight is not None, HAS_B=need_db,
            BLOCK=block, **K.launch_options(block),
        )
    dw = dw_part.sum(0) if need_dw else _f32(x, 0)  # the kernel sums it whenever there is a weight
    db = db_part.sum(0) if need_db else _f32(x, 0)
    return dx, dw, db


@torch.library.custom_op("normlab::dyt_fwd", mutates_args=())
def dyt_fwd(x: Tensor, alpha: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    m, d = op_rules.n_rows(x), x.shape[-1]
    y = torch.empty_like(x)
    if m:
        block = K.block_size(d)
        K.dyt_fwd_kernel[(m,)](
            x, alpha, x if weight is None else weight, x if bias is None else bias, y, d,
            HAS_W=weight is not None, HAS_B=bias is not None, BLOCK=block,
            **K.launch_options(block),
        )
    return y


@torch.library.custom_op("normlab::dyt_bwd", mutates_args=())
def dyt_bwd(
    dy: Tensor, x: Tensor, alpha: Tensor, weight: Tensor | None, need_dalpha: bool,
    need_dw: bool, need_db: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    m, d = op_rules.n_rows(x), x.shape[-1]
    dx = torch.empty_like(x)
    progs = _programs(x, m)
    da_part = torch.zeros(progs, device=x.device, dtype=torch.float32)
    dw_part = _f32(x, progs, d) if weight is not None else _f32(x, 0)
    db_part = _f32(x, progs, d) if need_db else _f32(x, 0)
    if m:
        block = K.block_size(d)
        K.dyt_bwd_kernel[(progs,)](
            dy, x, alpha, x if weight is None else weight, dx, da_part, dw_part, db_part,
            m, d, triton.cdiv(m, progs),
            HAS_W=weight is not None, HAS_B=need_db, BLOCK=block, **K.launch_options(block),
        )
    dw = dw_part.sum(0) if need_dw else _f32(x, 0)  # the kernel sums it whenever there is a weight
    db = db_part.sum(0) if need_db else _f32(x, 0)
    return dx, da_part.sum() if need_dalpha else da_part.new_zeros(()), dw, db


@torch.library.custom_op("normlab::derf_fwd", mutates_args=())
def derf_fwd(
    x: Tensor, alpha: Tensor, shift: Tensor, weight: Tensor | None, bias: Tensor | None
) -> Tensor:
    m, d = op_rules.n_rows(x), x.shape[-1]
    y = torch.empty_like(x)
    if m:
        block = K.block_size(d)
        K.derf_fwd_kernel[(m,)](
            x, alpha, shift, x if weight is None else weight, x if bias is None else bias, y, d,
            HAS_W=weight is not None, HAS_B=bias is not None, BLOCK=block,
            **K.launch_options(block),
        )
    return y


@torch.library.custom_op("normlab::derf_bwd", mutates_args=())
def derf_bwd(
    dy: Tensor, x: Tensor, alpha: Tensor, shift: Tensor, weight: Tensor | None,
    need_dalpha: bool, need_dshift: bool, need_dw: bool, need_db: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    m, d = op_rules.n_rows(x), x.shape[-1]
    dx = torch.empty_like(x)
    progs = _programs(x, m)
    da_part = torch.zeros(progs, device=x.device, dtype=torch.float32)
    ds_part = torch.zeros(progs, device=x.device, dtype=torch.float32)
    dw_part = _f32(x, progs, d) if weight is not None else _f32(x, 0)
    db_part = _f32(x, progs, d) if need_db else _f32(x, 0)
    if m:
        block = K.block_size(d)
        K.derf_bwd_kernel[(progs,)](
            dy, x, alpha, shift, x if weight is None else weight, dx, da_part, ds_part,
            dw_part, db_part, m, d, triton.cdiv(m, progs),
            HAS_W=weight is not None, HAS_B=need_db, BLOCK=block, **K.launch_options(block),
        )
    dw = dw_part.sum(0) if need_dw else _f32(x, 0)  # the kernel sums it whenever there is a weight
    db = db_part.sum(0) if need_db else _f32(x, 0)
    zero = da_part.new_zeros(())
    return (dx, da_part.sum() if need_dalpha else zero, ds_part.sum() if need_dshift else zero,
            dw, db)


@torch.library.custom_op("normlab::gated_fwd", mutates_args=())
def gated_fwd(
    x: Tensor, gate: Tensor | None, weight: Tensor | None, eps: float, group_size: int,
    norm_before_gate: bool,
) -> tuple[Tensor, Tensor]:
    n_groups = x.numel() // group_size
    y = torch.empty_like(x)
    rstd = _f32(x, n_groups)
    if n_groups:
        block = K.block_size(group_size)
        K.gated_fwd_kernel[(n_groups,)](
            x, x if gate is None else gate, x if weight is None else weight, y, rstd,
            x.shape[-1], group_size, eps, HAS_Z=gate is not None, HAS_W=weight is not None,
            NORM_BEFORE_GATE=norm_before_gate, BLOCK=block, **K.launch_options(block),
        )
    return y, rstd


@torch.library.custom_op("normlab::gated_bwd", mutates_args=())
def gated_bwd(
    dy: Tensor, x: Tensor, gate: Tensor | None, weight: Tensor | None, rstd: Tensor,
    group_size: int, norm_before_gate: bool, need_dw: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    m, d = op_rules.n_rows(x), x.shape[-1]
    dx = torch.empty_like(x)
    dgate = torch.empty_like(x) if gate is not None else x.new_empty(0)
    progs = _programs(x, m)
    dw_part = _f32(x, progs, d) if weight is not None else _f32(x, 0)
    if m:
        block = K.block_size(group_size)
        K.gated_bwd_kernel[(progs, d // group_size)](
            dy, x, x if gate is None else gate, x if weight is None else weight, rstd, dx,
            dx if gate is None else dgate, dw_part, m, d, group_size, triton.cdiv(m, progs),
            HAS_Z=gate is not None, HAS_W=weight is not None,
            NORM_BEFORE_GATE=norm_before_gate, BLOCK=block, **K.launch_options(block),
        )
    dw = dw_part.sum(0) if need_dw else _f32(x, 0)  # the kernel sums it whenever there is a weight
    return dx, dgate, dw


OPS = op_rules.Ops(norm_fwd, norm_bwd, dyt_fwd, dyt_bwd, derf_fwd, derf_bwd, gated_fwd, gated_bwd)
op_rules.register(OPS)
ENTRY_POINTS = op_rules.entry_points(OPS)
