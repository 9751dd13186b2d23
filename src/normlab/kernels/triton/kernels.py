"""The Triton programs: one row per program in the forward, a strip of rows per program in the
backward with per-program partial sums for the parameter gradients (reduced by the caller).

All arithmetic is float32 whatever the storage dtype; rows are contiguous in their last axis.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _affine_store(y, W, B, Y, cols, offs, mask, HAS_W: tl.constexpr, HAS_B: tl.constexpr):
    """Y[offs] = y·w + b (each optional) in Y's dtype: the forward kernels' epilogue."""
    if HAS_W:
        y = y * tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_B:
        y = y + tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _store_partials(dw_acc, db_acc, DW_PART, DB_PART, pid, n_cols, cols, mask,
                    HAS_W: tl.constexpr, HAS_B: tl.constexpr):
    """This program's partial dweight/dbias row; torch sums the rows of all programs."""
    if HAS_W:
        tl.store(DW_PART + pid * n_cols + cols, dw_acc, mask=mask)
    if HAS_B:
        tl.store(DB_PART + pid * n_cols + cols, db_acc, mask=mask)


@triton.jit
def norm_fwd_kernel(
    X, RES, W, B, Y, H, MEAN, RSTD,
    n_cols, eps,
    IS_RMS: tl.constexpr, HAS_RES: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Row r of y = norm(h) · w + b with h = x (+ res), storing h, mean (LayerNorm) and rstd."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    offs = row * n_cols + cols
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        h = x + tl.load(RES + offs, mask=mask, other=0.0).to(tl.float32)
        h_stored = h.to(H.dtype.element_ty)
        tl.store(H + offs, h_stored, mask=mask)
        x = h_stored.to(tl.float32)  # normalize the rounded residual, as the reference does
    if IS_RMS:
        centred = x
    else:
        mean = tl.sum(x, axis=0) / n_cols
        tl.store(MEAN + row, mean)
        centred = tl.where(mask, x - mean, 0.0)
    var = tl.sum(centred * centred, axis=0) / n_cols
    rstd = 1.0 / tl.sqrt(var + eps)
    tl.store(RSTD + row, rstd)
    y = centred * rstd
    _affine_store(y, W, B, Y, cols, offs, mask, HAS_W, HAS_B)


@triton.jit
def norm_bwd_kernel(
    DY, DH, X, W, MEAN, RSTD, DX, DW_PART, DB_PART,
    n_rows, n_cols, rows_per_program,
    IS_RMS: tl.constexpr, HAS_DH: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """dx = rstd·(g·w − x̂·mean(g·w·x̂) [− mean(g·w) for LayerNorm]) (+ dh), partial Σ g·x̂, Σ g."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    if HAS_W:
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros([BLOCK], dtype=tl.float32)
    db_acc = tl.zeros([BLOCK], dtype=tl.float32)
    first = pid.to(tl.int64) * rows_per_program  # int64 offsets past 2**31 elements
    last = tl.minimum(first + rows_per_program, n_rows)
    for row in range(first, last):
        offs = row * n_cols + cols
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row)
        xhat = x * rstd if IS_RMS else tl.where(mask, (x - tl.load(MEAN + row)) * rstd, 0.0)
        wdy = dy * w if HAS_W else dy
        c1 = tl.sum(xhat * wdy, axis=0) / n_cols
        if IS_RMS:
            dx = (wdy - xhat * c1) * rstd
        else:
            c2 = tl.sum(wdy, axis=0) / n_cols
            dx = (wdy - (xhat * c1 + c2)) * rstd
        if HAS_DH:
            dx = dx + tl.load(DH + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)
        if HAS_W:
            dw_acc += dy * xhat
        if HAS_B:
            db_acc += dy
    _store_partials(dw_acc, db_acc, DW_PART, DB_PART, pid, n_cols, cols, mask, HAS_W, HAS_B)


@triton.jit
def _tanh(z):
    # tanh from exp of a non-positive argument: no overflow, exact ±1 in the tails.
    e = tl.exp(-2.0 * tl.abs(z))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(z < 0, -t, t)


@triton.jit
def dyt_fwd_kernel(
    X, ALPHA, W, B, Y, n_cols,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, BLOCK: tl.constexpr,
):
    """Row r of y = w · tanh(α·x) + b."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    offs = row * n_cols + cols
    alpha = tl.load(ALPHA).to(tl.float32)
    y = _tanh(alpha * tl.load(X + offs, mask=mask, other=0.0).to(tl.float32))
    _affine_store(y, W, B, Y, cols, offs, mask, HAS_W, HAS_B)


@triton.jit
def dyt_bwd_kernel(
    DY, X, ALPHA, W, DX, DA_PART, DW_PART, DB_PART,
    n_rows, n_cols, rows_per_program,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, BLOCK: tl.constexpr,
):
    """dx = α·g·w·(1 − t²), partial dα = Σ g·w·(1 − t²)·x, dw = Σ g·t, db = Σ g (t = tanh(αx))."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    alpha = tl.load(ALPHA).to(tl.float32)
    if HAS_W:
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    da_acc = tl.zeros([BLOCK], dtype=tl.float32)
    dw_acc = tl.zeros([BLOCK], dtype=tl.float32)
    db_acc = tl.zeros([BLOCK], dtype=tl.float32)
    first = pid.to(tl.int64) * rows_per_program  # int64 offsets past 2**31 elements
    last = tl.minimum(first + rows_per_program, n_rows)
    for row in range(first, last):
        offs = row * n_cols + cols
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
        t = _tanh(alpha * x)
        dz = dy * w * (1.0 - t * t) if HAS_W else dy * (1.0 - t * t)
        tl.store(DX + offs, (alpha * dz).to(DX.dtype.element_ty), mask=mask)
        da_acc += dz * x
        if HAS_W:
            dw_acc += dy * t
        if HAS_B:
            db_acc += dy
    tl.store(DA_PART + pid, tl.sum(da_acc, axis=0))
    _store_partials(dw_acc, db_acc, DW_PART, DB_PART, pid, n_cols, cols, mask, HAS_W, HAS_B)


@triton.jit
def derf_fwd_kernel(
    X, ALPHA, SHIFT, W, B, Y, n_cols,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, BLOCK: tl.constexpr,
):
    """Row r of y = w · erf(α·x + s) + b."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    offs = row * n_cols + cols
    alpha = tl.load(ALPHA).to(tl.float32)
    shift = tl.load(SHIFT).to(tl.float32)
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    _affine_store(tl.math.erf(alpha * x + shift), W, B, Y, cols, offs, mask, HAS_W, HAS_B)


@triton.jit
def _erf_from_exp(z, e):
    """erf(z) from e = exp(−z²), which the backward has anyway: Abramowitz & Stegun 7.1.26,
    1 − (a₁t + … + a₅t⁵)·e with t = 1/(1 + p|z|), absolute error ≤ 1.5e-7. Fewer live values
    than libdevice's erf, which made the backward spill at 8192 channels."""
    t = 1.0 / (1.0 + 0.3275911 * tl.abs(z))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027
                                                                          + t * 1.061405429))))
    r = 1.0 - poly * e
    return tl.where(z < 0, -r, r)


@triton.jit
def derf_bwd_kernel(
    DY, X, ALPHA, SHIFT, W, DX, DA_PART, DS_PART, DW_PART, DB_PART,
    n_rows, n_cols, rows_per_program,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, BLOCK: tl.constexpr,
):
    """With z = α·x + s and k = erf'(z) = 2/√π·exp(−z²): dx = α·g·w·k, partial dα = Σ g·w·k·x,
    ds = Σ g·w·k, dw = Σ g·erf(z), db = Σ g."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    alpha = tl.load(ALPHA).to(tl.float32)
    shift = tl.load(SHIFT).to(tl.float32)
    # Fewer row-long values live than DyT's backward: dα and ds are scalars reduced row by row,
    # w is reloaded per row (a cache hit), erf reuses exp(−z²). Built the way of dyt_bwd (w and
    # four accumulators in registers, libdevice's erf) it spilled 160 bytes per thread at 8192
    # channels on sm_90; this form spills 36 (docs/kernels.md).
    da = 0.0
    ds = 0.0
    dw_acc = tl.zeros([BLOCK], dtype=tl.float32)
    db_acc = tl.zeros([BLOCK], dtype=tl.float32)
    first = pid.to(tl.int64) * rows_per_program  # int64 offsets past 2**31 elements
    last = tl.minimum(first + rows_per_program, n_rows)
    for row in range(first, last):
        offs = row * n_cols + cols
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
        z = alpha * x + shift
        e = tl.exp(-z * z)
        k = 1.1283791670955126 * e
        # 0 past the row, as dy is
        dz = dy * tl.load(W + cols, mask=mask, other=0.0).to(tl.float32) * k if HAS_W else dy * k
        tl.store(DX + offs, (alpha * dz).to(DX.dtype.element_ty), mask=mask)
        da += tl.sum(dz * x, axis=0)
        ds += tl.sum(dz, axis=0)
        if HAS_W:
            dw_acc += dy * _erf_from_exp(z, e)
        if HAS_B:
            db_acc += dy
    tl.store(DA_PART + pid, da)
    tl.store(DS_PART + pid, ds)
    _store_partials(dw_acc, db_acc, DW_PART, DB_PART, pid, n_cols, cols, mask, HAS_W, HAS_B)


@triton.jit
def _silu_parts(z):
    """silu(z) = z·σ(z) and its derivative σ(z)·(1 + z·(1 − σ(z)))."""
    sig = tl.sigmoid(z)
    return z * sig, sig * (1.0 + z * (1.0 - sig))


@triton.jit
def gated_fwd_kernel(
    X, Z, W, Y, RSTD, n_cols, group_size, eps,
    HAS_Z: tl.constexpr, HAS_W: tl.constexpr, NORM_BEFORE_GATE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Group g of row r (program r·G + g) of the gated RMSNorm, storing its rstd."""
    pid = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < group_size
    offs = pid * group_size + cols  # r·D + g·group_size + i
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_Z:
        s, _ = _silu_parts(tl.load(Z + offs, mask=mask, other=0.0).to(tl.float32))
        if not NORM_BEFORE_GATE:
            x = x * s
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / group_size + eps)
    tl.store(RSTD + pid, rstd)
    y = x * rstd
    if HAS_W:
        y = y * tl.load(W + (pid * group_size) % n_cols + cols, mask=mask).to(tl.float32)
    if HAS_Z and NORM_BEFORE_GATE:
        y = y * s
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def gated_bwd_kernel(
    DY, X, Z, W, RSTD, DX, DZ, DW_PART, n_rows, n_cols, group_size, rows_per_program,
    HAS_Z: tl.constexpr, HAS_W: tl.constexpr, NORM_BEFORE_GATE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Program (p, g): group g of a strip of rows. With u the normalized input (x ⊙ silu(z), or
    x), x̂ = u·rstd and dn the gradient reaching x̂·w: du = rstd·(dn·w − x̂·mean(dn·w·x̂)), then
    through the gate: dx = du·silu(z), dz = du·x·silu'(z) (gate first) or dx = du,
    dz = g·x̂·w·silu'(z) (norm first); partial dw = Σ dn·x̂ over the strip."""
    pid = tl.program_id(0)
    group = tl.program_id(1).to(tl.int64)
    n_groups = n_cols // group_size
    cols = tl.arange(0, BLOCK)
    mask = cols < group_size
    wcols = group * group_size + cols
    if HAS_W:
        w = tl.load(W + wcols, mask=mask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros([BLOCK], dtype=tl.float32)
    first = pid.to(tl.int64) * rows_per_program  # int64 offsets past 2**31 elements
    last = tl.minimum(first + rows_per_program, n_rows)
    for row in range(first, last):
        offs = row * n_cols + wcols
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row * n_groups + group)
        u = x
        dn = dy
        if HAS_Z:
            s, ds = _silu_parts(tl.load(Z + offs, mask=mask, other=0.0).to(tl.float32))
            if NORM_BEFORE_GATE:
                dn = dy * s
            else:
                u = x * s
        xhat = u * rstd
        wdn = dn * w if HAS_W else dn
        c1 = tl.sum(xhat * wdn, axis=0) / group_size
        du = (wdn - xhat * c1) * rstd
        dx = du
        if HAS_Z:
            if NORM_BEFORE_GATE:
                dz = dy * (xhat * w if HAS_W else xhat) * ds
            else:
                dx = du * s
                dz = du * x * ds
            tl.store(DZ + offs, dz.to(DZ.dtype.element_ty), mask=mask)
        tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)
        if HAS_W:
            dw_acc += dn * xhat
    if HAS_W:
        tl.store(DW_PART + pid * n_cols + wcols, dw_acc, mask=mask)


def block_size(n_cols: int) -> int:
    """The power-of-two row block that holds `n_cols` channels."""
    return triton.next_power_of_2(n_cols)


def launch_options(block: int) -> dict[str, int | bool]:
    """How every kernel is launched for a row block of `block` channels: about 256 elements a
    warp, between 1 and 32 warps, and multiply-adds fused (stated, not left to Triton's default,
    which changes between releases).

    32 warps rather than 16 from 8192 channels on: the backward kernels keep their parameter
    gradients' partial sums in registers, and with 16 warps ptxas spills them at 8192 float32
    channels (`python -m normlab.kernels.triton.aot`); with 32 it does not."""
    return {"num_warps": min(max(block // 256, 1), 32), "enable_fp_fusion": True}
