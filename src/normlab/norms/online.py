"""Online Normalization: per-feature streaming statistics with a controlled backward."""

from __future__ import annotations

import torch
from torch import Tensor

from normlab import functional as F
from normlab.norms.base import Norm, NormInfo, affine_params, hold_state
from normlab.norms.registry import register_norm


def linear_recurrence(c: Tensor, d: Tensor, s0: Tensor) -> Tensor:
    """All states of s_n = c_n·s_{n-1} + d_n for n = 1..N, as an (N+1, C) tensor from s_0.

    `c` and `d` are (N, C); `s0` is (C,). An inclusive Hillis-Steele scan over the pairs (c, d)
    with the composition (c2, d2)∘(c1, d1) = (c2·c1, c2·d1 + d2): log2(N) vectorised steps of
    products and sums only (no division), equal to the sequential loop up to rounding.
    """
    a, b = c, d
    step = 1
    while step < b.shape[0]:
        b = torch.cat([b[:step], a[step:] * b[:-step] + b[step:]])
        a = torch.cat([a[:step], a[step:] * a[:-step]])
        step *= 2
    return torch.cat([s0.unsqueeze(0), a * s0 + b])


def _steps(real: Tensor | None, coeff: Tensor | float, drive: Tensor) -> tuple[Tensor, Tensor]:
    """(c, d) of one recurrence step per token; padded tokens are identity steps (1, 0)."""
    c = torch.as_tensor(coeff, dtype=drive.dtype, device=drive.device).expand_as(drive)
    if real is None:
        return c, drive
    return torch.where(real, c, torch.ones_like(c)), torch.where(real, drive, 0.0)


class _OnlineFunction(torch.autograd.Function):
    """y = (x - μ_{n-1})/sqrt(σ²_{n-1} + eps) token by token, with the u/v-controlled backward.

    Works on (N, C) rows in stream order; `real` is (N, 1) bool or None. The buffers
    (running mean/var in forward, u/v in backward) are updated in place.
    """

    @staticmethod
    def forward(
        ctx, x: Tensor, real: Tensor | None, mean: Tensor, var: Tensor, u: Tensor, v: Tensor,
        alpha_fwd: float, alpha_bkw: float, eps: float,
    ) -> Tensor:
        mu0, var0 = mean.to(x.dtype), var.to(x.dtype)
        mus = linear_recurrence(*_steps(real, alpha_fwd, (1 - alpha_fwd) * x), mu0)
        delta = x - mus[:-1]  # against the mean *before* each token
        drive = alpha_fwd * (1 - alpha_fwd) * delta.square()
        variances = linear_recurrence(*_steps(real, alpha_fwd, drive), var0)
        scale = torch.sqrt(variances[:-1] + eps)
        out = delta / scale
        mean.copy_(mus[-1])
        var.copy_(variances[-1])
        ctx.save_for_backward(out, scale, real)
        hold_state(ctx, u=u, v=v)  # the control variables, advanced by the backward
        ctx.alpha_bkw = alpha_bkw
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        out, scale, real = ctx.saved_tensors
        u: Tensor = ctx.u
        v: Tensor = ctx.v
        leak = 1 - ctx.alpha_bkw
        # v_n = v_{n-1} + ĝ_n·y_n with ĝ_n = g_n - (1-α_b)·v_{n-1}·y_n  (removes the y component)
        vs = linear_recurrence(*_steps(real, 1 - leak * out.square(), g * out), v.to(g.dtype))
        g_hat = g - leak * vs[:-1] * out
        if real is not None:
            g_hat = torch.where(real, g_hat, g)
        h = g_hat / scale
        # dx_n = h_n - (1-α_b)·u_{n-1};  u_n = u_{n-1} + dx_n  (removes the mean component)
        us = linear_recurrence(*_steps(real, ctx.alpha_bkw, h), u.to(g.dtype))
        dx = h - leak * us[:-1]
        if real is not None:
            dx = torch.where(real, dx, h)
        u.copy_(us[-1])
        v.copy_(vs[-1])
        return dx, None, None, None, None, None, None, None, None


@register_norm("onlinenorm")
class OnlineNorm(Norm):
    """Online Normalization: per-feature exponential moving statistics over the token stream.

    The tokens of a call are processed one after another in row-major order of the leading
    dimensions (sequence 0 token 0, 1, ..., then sequence 1, ...), padded tokens skipped. For
    each real token n and channel:

        y_n  = (x_n - μ_{n-1}) / sqrt(σ²_{n-1} + eps)
        σ²_n = α_f·σ²_{n-1} + α_f·(1-α_f)·(x_n - μ_{n-1})²
        μ_n  = α_f·μ_{n-1} + (1-α_f)·x_n
        out  = clamp(γ·y + β, -clamp_value, clamp_value)       (ecm="ac", training)

    Backward (the streaming analogue of BatchNorm's projection), in the same token order with
    control variables u, v and g = dL/dy:

        ĝ_n  = g_n - (1-α_b)·v_{n-1}·y_n;   v_n = v_{n-1} + ĝ_n·y_n
        dx_n = ĝ_n/sqrt(σ²_{n-1} + eps) - (1-α_b)·u_{n-1};   u_n = u_{n-1} + dx_n

    so the components of the gradient along y and along 1 decay instead of reaching x. Both
    passes run as vectorised scans of these linear recurrences (exact, no per-token loop).
    Eval: y = γ·(x - μ)/sqrt(σ² + eps) + β with the frozen statistics, a per-channel affine
    (fold="op"). Any batch size works, 1 included.

    Args:
        dim: channels C.
        eps: 1e-5.
        affine: learn γ (ones) and β (zeros).
        alpha_fwd: 0.999, decay of the streaming mean and variance.
        alpha_bkw: 0.99, decay of the control variables u, v.
        ecm: error compensation mechanism, "ac" (activation clamping, the official signature
            default) or None. Layer scaling ("ls") is not offered: it is a per-token reduction,
            so the norm would no longer be an affine map at inference.
        clamp_value: 5.0, the activation-clamping bound.

    Deliberate deviations from the official code: the official layer clamps in eval mode too;
    here the clamp guards training only, so that eval is exactly the affine map that folds.
    Padded tokens neither advance the statistics nor u, v; they are normalized with the
    statistics current at their place in the stream and get the plain gradient g/sqrt(σ²+eps).
    Statistics of a token depend on the tokens before it in the stream, earlier sequences of
    the batch included.

    Paper: "Online Normalization for Training Neural Networks" (Chiley et al., NeurIPS 2019).
    """

    info = NormInfo(
        family="batch", stats="batch", fold="op",
        paper="Online Normalization for Training Neural Networks (Chiley et al., NeurIPS 2019)",
        has_running_stats=True, approx_backward=True,
    )

    def __init__(
        self, dim: int, *, eps: float = 1e-5, affine: bool = True, alpha_fwd: float = 0.999,
        alpha_bkw: float = 0.99, ecm: str | None = "ac", clamp_value: float = 5.0,
        device=None, dtype=None,
    ) -> None:
        super().__init__(dim, eps=eps, affine=affine)
        if ecm not in ("ac", None):
            raise ValueError(
                f"onlinenorm: ecm must be 'ac' (activation clamping) or None, got {ecm!r}"
            )
        if not clamp_value > 0:
            raise ValueError(f"onlinenorm: clamp_value must be > 0, got {clamp_value!r}")
        self.alpha_fwd = self.unit_interval("alpha_fwd", alpha_fwd)
        self.alpha_bkw = self.unit_interval("alpha_bkw", alpha_bkw)
        self.ecm = ecm
        self.clamp_value = float(clamp_value)
        affine_params(self, dim, bias=True, device=device, dtype=dtype)
        self.running_mean: Tensor
        self.running_var: Tensor
        self.u: Tensor
        self.v: Tensor
        for name, fill in (("running_mean", 0.0), ("running_var", 1.0), ("u", 0.0), ("v", 0.0)):
            self.register_stats(name, torch.full((dim,), fill, device=device, dtype=dtype))

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        xf = F.upcast(x)
        if not self.training:
            scale, shift = self._eval_affine()
            return (xf * scale.to(xf.dtype) + shift.to(xf.dtype)).to(x.dtype)
        rows = xf.reshape(-1, self.dim)  # (N, C) in stream order
        real = None if mask is None else mask.reshape(-1, 1)
        y = _OnlineFunction.apply(
            rows, real, self.running_mean, self.running_var, self.u, self.v,
            self.alpha_fwd, self.alpha_bkw, self.eps,
        ).reshape(xf.shape)
        y = F.apply_affine(y, self.weight, self.bias)
        if self.ecm == "ac":
            y = y.clamp(-self.clamp_value, self.clamp_value)
        return y.to(x.dtype)

    def _eval_affine(self) -> tuple[Tensor, Tensor]:
        """(γ/sqrt(σ²+eps), β - γ·μ/sqrt(σ²+eps)): the eval map y = scale·x + shift."""
        return F.affine_of_moments(
            self.running_mean, self.running_var, self.weight, self.bias, self.eps
        )

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, alpha_fwd={self.alpha_fwd:g}, alpha_bkw={self.alpha_bkw:g}, "
            f"ecm={self.ecm!r}, clamp_value={self.clamp_value:g}"
        )
