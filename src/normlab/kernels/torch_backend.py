"""The "torch" backend: hand-written backward passes built from fused ATen ops, no compile step.

Each op works on a 2-D (M, D) view, M rows of D channels; `dispatch` flattens and restores the
leading shape. Half inputs are upcast to float32 for the arithmetic (statistics in float32),
outputs return in the input dtype and parameter gradients in the parameter dtype.

What makes it fast on CPU (one pass = one read or write of an (M, D) tensor; see
docs/kernels.md for the measurements that chose these):

* LayerNorm is `torch.nn.functional.layer_norm`: ATen's CPU kernel is already one fused pass
  per direction, and nothing built from separate ops beats it.
* RMSNorm forward: one reduction pass (`linalg.vector_norm`, no temporary) and one or two
  elementwise passes (`x * rstd`, then `* weight` or `addcmul` with the bias).
  RMSNorm backward reuses ATen's fused LayerNorm backward with mean = 0 and the RMS rstd: it
  returns dx + rstd·mean(g·w) (LayerNorm also subtracts the mean of g·w) and the exact dweight
  in one pass. The extra term is removed with a matrix-vector product (g @ w) and one in-place
  broadcast add, instead of the 5-6 elementwise passes of a plain formula.
* DyT: tanh(z) = 2·σ(2z) − 1, and σ(βx) is exactly what `softplus_backward` computes, vectorized
  and fused with the scale β = 2α. torch's CPU `tanh` is about 2.5× slower than that. The
  affine then folds into one `addcmul`: w·tanh(αx) + b = (2w)·σ(2αx) + (b − w). The backward
  uses σ saved by the forward: 1 − tanh² = 4σ(1−σ) (`sigmoid_backward`), so no transcendental
  is evaluated twice. Cost of the identity: an absolute error of a few ulp of |w| + |b| instead
  of a relative one near tanh's zero.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from normlab.functional import upcast

aten = torch.ops.aten


def _as(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.to(dtype)


class _RMSNormFn(torch.autograd.Function):
    """y = x · rstd · w (+ b), rstd = 1/sqrt(mean(x²) + eps) per row of a 2-D x."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
        xf = upcast(x)
        d = xf.shape[-1]
        rstd = torch.linalg.vector_norm(xf, dim=-1, keepdim=True)  # (M, 1)
        rstd = rstd.square_().div_(d).add_(eps).rsqrt_()
        y = torch.mul(xf, rstd)
        w, b = _as(weight, y.dtype), _as(bias, y.dtype)
        if w is not None and b is not None:
            torch.addcmul(b, y, w, out=y)
        elif w is not None:
            y.mul_(w)
        elif b is not None:
            y.add_(b)
        ctx.save_for_backward(x, weight, rstd)
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight, rstd = ctx.saved_tensors
        need_dx, need_dw, need_db, _ = ctx.needs_input_grad
        xf = upcast(x)
        gf = upcast(grad).contiguous()
        m, d = xf.shape
        wf = _as(weight, xf.dtype)
        dx = dw = db = None
        if need_dx or need_dw:
            # LayerNorm's fused backward with mean 0 returns rstd·(g·w − mean(g·w) − x̂·mean(g·w·x̂))
            # and the exact dweight = Σ g·x̂; RMSNorm's dx lacks the mean(g·w) term.
            mean = xf.new_zeros(m, 1)
            dx_ln, dw, _ = aten.native_layer_norm_backward(
                gf, xf, [d], mean, rstd, wf, None, [need_dx, need_dw, False]
            )
            if need_dx:
                gw_sum = torch.mv(gf, wf) if wf is not None else gf.sum(-1)  # (M,)
                dx = dx_ln.add_(gw_sum.unsqueeze(-1).mul_(rstd).div_(d)).to(x.dtype)
            if need_dw:
                dw = dw.to(weight.dtype)
        if need_db:
            db = gf.sum(0).to(ctx.bias_dtype)
        return dx, dw, db, None


class _DyTFn(torch.autograd.Function):
    """y = w · tanh(α·x) + b with a scalar α, through σ: tanh(z) = 2σ(2z) − 1."""

    @staticmethod
    def forward(
        ctx, x: Tensor, alpha: Tensor | float, weight: Tensor | None, bias: Tensor | None
    ) -> Tensor:
        xf = upcast(x)
        a = float(alpha.detach()) if isinstance(alpha, Tensor) else float(alpha)
        # softplus_backward(g, x, β, T) = g·σ(βx) for βx <= T, g above: exp(βx) must stay finite.
        threshold = 700.0 if xf.dtype == torch.float64 else 80.0
        sig = aten.softplus_backward(xf.new_ones(()).expand_as(xf), xf, 2.0 * a, threshold)
        w = _as(weight, xf.dtype)
        b = _as(bias, xf.dtype)
        scale = 2.0 * w if w is not None else xf.new_tensor(2.0)
        shift = -w if w is not None else xf.new_tensor(-1.0)
        if b is not None:
            shift = shift + b
        y = torch.addcmul(shift, sig, scale).to(x.dtype)
        ctx.save_for_backward(x, sig, weight)
        ctx.alpha = a
        ctx.alpha_meta = (alpha.shape, alpha.dtype) if isinstance(alpha, Tensor) else None
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, sig, weight = ctx.saved_tensors
        need_dx, need_da, need_dw, need_db = ctx.needs_input_grad
        a = ctx.alpha
        xf = upcast(x)
        gf = upcast(grad).contiguous()
        dx = dalpha = dw = db = None
        col_sum = gf.sum(0) if (need_db or need_dw) else None
        buf = None
        if need_dw:
            buf = torch.mul(gf, sig)
            dw = (2.0 * buf.sum(0) - col_sum).to(weight.dtype)  # Σ g·(2σ − 1)
        if need_db:
            db = col_sum.to(ctx.bias_dtype)
        if need_dx or need_da:
            # g·w·(1 − tanh²) = 4·w·g·σ(1 − σ): one fused pass, then the per-channel scale.
            buf = aten.sigmoid_backward(gf, sig) if buf is None else (
                aten.sigmoid_backward.grad_input(gf, sig, grad_input=buf)
            )
            scale = 4.0 * weight.to(xf.dtype) if weight is not None else 4.0
            if need_da:
                buf.mul_(scale)
                dalpha = torch.dot(buf.view(-1), xf.reshape(-1))
                dalpha = dalpha.reshape(ctx.alpha_meta[0]).to(ctx.alpha_meta[1])
                if need_dx:
                    dx = buf.mul_(a).to(x.dtype)
            else:
                dx = buf.mul_(scale * a).to(x.dtype)
        return dx, dalpha, dw, db


def rms_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """RMSNorm of a 2-D (M, D) tensor over its last axis."""
    return _RMSNormFn.apply(x, weight, bias, eps)


def layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """LayerNorm of a 2-D (M, D) tensor: ATen's fused kernel (float32 statistics for halves)."""
    if x.dtype in (torch.float16, torch.bfloat16) and not _same_dtype(x, weight, bias):
        # ATen needs parameters in the input dtype or all-float32 ones; cast anything else up.
        weight, bias = _as(weight, torch.float32), _as(bias, torch.float32)
    elif x.dtype not in (torch.float16, torch.bfloat16):
        weight, bias = _as(weight, x.dtype), _as(bias, x.dtype)
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def dyt(x: Tensor, alpha: Tensor | float, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """DyT of a 2-D (M, D) tensor."""
    return _DyTFn.apply(x, alpha, weight, bias)


def _same_dtype(x: Tensor, *params: Tensor | None) -> bool:
    return all(p is None or p.dtype == x.dtype for p in params)
