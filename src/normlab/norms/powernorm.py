"""PowerNorm: per-token group scaling, a batch quadratic mean and an approximate backward."""

from __future__ import annotations

import torch
from torch import Tensor

from normlab import functional as F
from normlab.norms.base import Norm, NormInfo, affine_params, hold_state
from normlab.norms.registry import register_norm

_GROUP_SCALING_EPS = 1e-5  # fixed inside GroupScaling1D, independent of the norm's eps


def group_scaling(x: Tensor, groups: int) -> Tensor:
    """GroupScaling1D: x / sqrt(mean(x_g²) + 1e-5) per token and channel group g, no affine."""
    shape = x.shape
    grouped = x.reshape(*shape[:-1], groups, shape[-1] // groups)
    return F.rms_norm(grouped, None, _GROUP_SCALING_EPS).reshape(shape)


class _PowerFunction(torch.autograd.Function):
    """z = x̃ / sqrt(ψ² + eps) (or running φ after warmup) with PowerNorm's approximate backward.

    The running buffers are updated in place: `running_phi` in forward, `ema_gz` (Γ) in backward.
    """

    @staticmethod
    def forward(
        ctx, xs: Tensor, mask: Tensor | None, running_phi: Tensor, ema_gz: Tensor,
        t: int, warmup_iters: int, alpha_fwd: float, alpha_bkw: float, eps: float,
    ) -> Tensor:
        psi2, _ = F.masked_mean_square(xs, mask)  # (C,) over real tokens, no centring
        phi = running_phi.to(psi2.dtype)
        z = xs * torch.rsqrt((psi2 if t <= warmup_iters else phi) + eps)
        if t < warmup_iters:
            phi = phi * ((t - 1) / t) + psi2 / t  # cumulative mean during warmup
        running_phi.copy_(alpha_fwd * phi + (1 - alpha_fwd) * psi2)
        ctx.save_for_backward(z, psi2, mask)
        hold_state(ctx, ema_gz=ema_gz)  # Γ: read and advanced by the backward
        ctx.alpha_bkw = alpha_bkw
        ctx.eps = eps
        return z

    @staticmethod
    def backward(ctx, g: Tensor):
        z, psi2, mask = ctx.saved_tensors
        ema_gz: Tensor = ctx.ema_gz
        g_hat = g - (1 - ctx.alpha_bkw) * ema_gz.to(g.dtype) * z
        ema_gz.add_(F.real_tokens(g_hat * z, mask).mean(0).to(ema_gz.dtype))
        if mask is not None:  # padded tokens are outside the statistics: no correction term
            g_hat = torch.where(mask.unsqueeze(-1), g_hat, g)
        # The batch ψ², also after warmup when the forward divided by the running φ.
        return g_hat * torch.rsqrt(psi2 + ctx.eps), None, None, None, None, None, None, None, None


@register_norm("powernorm")
class PowerNorm(Norm):
    """PowerNorm (MaskPowerNorm): batch quadratic-mean scaling with running statistics.

    In training, with t the forward-call counter (t = 1 on the first call):

        x̃   = GroupScaling(x) = x / sqrt(mean_g(x²) + 1e-5)    per token, G = group_num groups
        ψ²  = mean over real tokens of x̃²                       per channel, no centring
        z   = x̃ / sqrt(ψ² + eps)   if t <= warmup_iters,   else  x̃ / sqrt(φ + eps)
        φ   ← φ·(t-1)/t + ψ²/t     if t < warmup_iters           (cumulative mean)
        φ   ← α_f·φ + (1-α_f)·ψ²   always, after the line above
        y   = γ·z + β

    The backward is the method's "approximate backpropagation", not the gradient of the forward.
    With g = dL/dz = dL/dy·γ and Γ = `ema_gz` (per channel):

        ĝ  = g - (1-α_b)·Γ·z
        Γ  ← Γ + mean over real tokens of ĝ·z       (additive, as coded; it acts as an EMA of
                                                     mean(g·z) because mean(z²) ≈ 1)
        dx̃ = ĝ / sqrt(ψ² + eps)                     (batch ψ², also after warmup)

    and autograd carries dx̃ through GroupScaling; dγ = Σ dy·z, dβ = Σ dy. In eval mode
    y = γ·GroupScaling(x)/sqrt(φ + eps) + β: GroupScaling stays per token, the rest is a
    per-channel affine (fold="affine").

    Args:
        dim: channels C.
        eps: 1e-5, added to ψ² and φ.
        affine: learn γ (ones) and β (zeros).
        alpha_fwd: 0.9, EMA factor of the running φ.
        alpha_bkw: 0.9, weight (1-α_b) of the gradient correction Γ.
        warmup_iters: 10000 training forward calls normalize with the batch ψ² (the official
            default; its fairseq scripts pass --warmup-updates, 8000).
        group_num: 1, the groups of GroupScaling (the official scripts use the number of
            attention heads); must divide dim.

    Counters, φ and Γ live in buffers (saved in the state_dict). `iters` advances once per
    training forward call, not per optimizer step: gradient accumulation, activation
    recomputation or calling the module twice shift the warmup.

    Deliberate deviation from the official code: statistics *and* the backward's gradient
    statistic mean(ĝ·z) are taken over real tokens only (the official backward also averages
    over padding), and padded tokens get the plain gradient g/sqrt(ψ²+eps) without the
    correction term. With batch statistics a token's output depends on the other tokens of the
    batch, future positions of a causal model included; as in the official code the statistics
    are not synchronized across data-parallel processes.

    Paper: "PowerNorm: Rethinking Batch Normalization in Transformers" (Shen, Yao, Gholami,
    Mahoney, Keutzer, ICML 2020).
    """

    info = NormInfo(
        family="batch", stats="batch", fold="affine",
        paper="PowerNorm: Rethinking Batch Normalization in Transformers "
        "(Shen, Yao, Gholami, Mahoney, Keutzer, ICML 2020)",
        has_running_stats=True, approx_backward=True,
    )

    def __init__(
        self, dim: int, *, eps: float = 1e-5, affine: bool = True, alpha_fwd: float = 0.9,
        alpha_bkw: float = 0.9, warmup_iters: int = 10000, group_num: int = 1,
        device=None, dtype=None,
    ) -> None:
        super().__init__(dim, eps=eps, affine=affine)
        if not isinstance(warmup_iters, int) or warmup_iters < 0:
            raise ValueError(f"powernorm: warmup_iters must be an int >= 0, got {warmup_iters!r}")
        if not isinstance(group_num, int) or group_num < 1 or dim % group_num:
            raise ValueError(
                f"powernorm: group_num must be a positive divisor of dim={dim}, got {group_num!r} "
                "(GroupScaling splits the channels into equal groups)"
            )
        self.alpha_fwd = self.unit_interval("alpha_fwd", alpha_fwd)
        self.alpha_bkw = self.unit_interval("alpha_bkw", alpha_bkw)
        self.warmup_iters = warmup_iters
        self.group_num = group_num
        affine_params(self, dim, bias=True, device=device, dtype=dtype)
        self.running_phi: Tensor
        self.ema_gz: Tensor
        self.iters: Tensor
        self.register_stats("running_phi", torch.ones(dim, device=device, dtype=dtype))
        self.register_stats("ema_gz", torch.zeros(dim, device=device, dtype=dtype))
        self.register_buffer("iters", torch.zeros((), device=device, dtype=torch.long))

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        xs = group_scaling(F.upcast(x), self.group_num)
        if self.training:
            self.iters.add_(1)
            z = _PowerFunction.apply(
                xs, mask, self.running_phi, self.ema_gz, int(self.iters), self.warmup_iters,
                self.alpha_fwd, self.alpha_bkw, self.eps,
            )
        else:
            z = xs * torch.rsqrt(self.running_phi.to(xs.dtype) + self.eps)
        return F.apply_affine(z, self.weight, self.bias).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, alpha_fwd={self.alpha_fwd:g}, alpha_bkw={self.alpha_bkw:g}, "
            f"warmup_iters={self.warmup_iters}, group_num={self.group_num}"
        )

