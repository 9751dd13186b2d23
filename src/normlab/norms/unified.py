"""Unified Normalization (UN1d): windowed batch second moments with an approximate backward."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from normlab import functional as F
from normlab.norms.base import Norm, NormInfo, affine_params, hold_state
from normlab.norms.registry import register_norm

_R_CLAMP = 5.0  # the gradient compensation factor r is clamped to [1/5, 5]


def _geometric_mean(window: Tensor) -> Tensor:
    """exp(mean_w log(b_w)) over the window axis 0; a zero entry counts as the smallest normal
    float, so an all-zero channel gives a tiny positive value instead of log(0) = -inf."""
    tiny = torch.finfo(window.dtype).tiny
    return window.clamp_min(tiny).log().mean(0).exp()


class _UnifiedFunction(torch.autograd.Function):
    """y = γ·x/sqrt(var + eps) + β with UN's backward; `correction` advances the gradient state.

    `correction(gz)` receives the per-channel mean of g·z over real tokens and returns the
    per-channel coefficient c of the correction ĝ = g - c·z.
    """

    @staticmethod
    def forward(
        ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None, mask: Tensor | None,
        var: Tensor, r: Tensor, correction: Callable[[Tensor], Tensor], eps: float,
    ) -> Tensor:
        inv_std = torch.rsqrt(var + eps)
        z = x * inv_std
        ctx.save_for_backward(z, inv_std, r, weight, mask)
        hold_state(ctx, correction=correction)  # it advances the module's gradient buffers
        return F.apply_affine(z, weight, bias)

    @staticmethod
    def backward(ctx, dy: Tensor):
        z, inv_std, r, weight, mask = ctx.saved_tensors
        g = dy * r if weight is None else dy * weight * r  # gradient compensation by r
        g_hat = g - ctx.correction(F.real_tokens(g * z, mask).mean(0)) * z
        if mask is not None:  # padded tokens are outside the statistics: no correction term
            g_hat = torch.where(mask.unsqueeze(-1), g_hat, g)
        rows = dy.reshape(-1, dy.shape[-1])
        d_weight = d_bias = None
        if ctx.needs_input_grad[1]:
            d_weight = (rows * (r * z).reshape(rows.shape)).sum(0)  # r·z, not z
        if ctx.needs_input_grad[2]:
            d_bias = rows.sum(0)
        return g_hat * inv_std, d_weight, d_bias, None, None, None, None, None


@register_norm("unifiednorm")
class UnifiedNorm(Norm):
    """Unified Normalization (UN1d): per-channel second moments smoothed over a window of batches.

    Training, with t the training forward-call counter (t = 1 on the first call), W_f/W_b the
    forward/backward windows and buffer_x2 the last W_f second moments:

        x2      = mean over real tokens of x²             per channel, no centring
        σ²_rec  = var_unbiased(sqrt(buffer_x2))           scalar, before this batch is stored
        buffer_x2[t mod W_f] = x2;  skip = (W_f == 1)
        outlier filtration (if enabled and t >= warmup): with AM/GM the arithmetic/geometric
            means over the window, if any channel has AM - GM > W_f·σ²_rec the batch is an
            outlier: buffer_x2[t mod W_f] = running_var, skip = True, skip_counter += 1
        var = x2                      if t <= W_f or t < warmup or skip
            = GM_w(buffer_x2)         otherwise            (fluctuation smoothing)
        r   = sqrt(var+eps)/sqrt(running_var+eps) clamped to [1/5, 5];
              r = 1 while t <= max(compensation_start, warmup) or skip
        y   = γ·x/sqrt(var + eps) + β;   running_var ← m·running_var + (1-m)·var

    Backward (the method's approximation, not the gradient of the forward), z = x/sqrt(var+eps):

        g = dy·γ·r;   gz = mean over real tokens of g·z
        buffer_gz[t mod W_b] = ema_gz if skip else gz
        mean_gz = gz if t <= W_b or t < warmup or skip, else mean_w(buffer_gz)
        ema_gz ← m·ema_gz + (1-m)·mean_gz
        ĝ = g - mean_gz·z if skip else g - ema_gz·z;   dx = ĝ/sqrt(var + eps)
        dγ = Σ dy·r·z;   dβ = Σ dy

    Eval: y = γ·x/sqrt(running_var + eps) + β, a per-channel affine (fold="op").

    Args:
        dim: channels C.
        eps: 1e-5.
        affine: learn γ (ones) and β (zeros).
        window_size: 4, or a pair (W_f, W_b) for the forward and backward windows.
        warmup_iters: 4000 training calls with plain batch statistics.
        outlier_filtration: False (the authors advise False for NLP, True for vision).
        momentum: 0.9, the EMA factor m of running_var and ema_gz.
        compensation_start: 1000, the constant of the official code below which r stays 1
            (r = 1 while t <= max(compensation_start, warmup_iters)).

    All counters advance per training forward call, not per optimizer step (gradient
    accumulation, recomputation and modules called twice shift them). The geometric mean treats
    zero second moments as the smallest normal float, so an all-zero channel does not take
    log(0).

    Deliberate deviation from the official code: the batch statistics and the gradient
    statistic gz are taken over real tokens only (the official backward also averages over
    padding), and padded tokens get the plain gradient g/sqrt(var+eps) without the correction.
    Batch statistics mix the tokens of a batch (future positions of a causal model included)
    and, as officially, are not synchronized across data-parallel processes.

    Paper: "Unified Normalization for Accelerating and Stabilizing Transformers" (Yang et al.,
    ACM MM 2022).
    """

    info = NormInfo(
        family="batch", stats="batch", fold="op",
        paper="Unified Normalization for Accelerating and Stabilizing Transformers "
        "(Yang et al., ACM MM 2022)",
        has_running_stats=True, approx_backward=True,
    )

    def __init__(
        self, dim: int, *, eps: float = 1e-5, affine: bool = True,
        window_size: int | tuple[int, int] = 4, warmup_iters: int = 4000,
        outlier_filtration: bool = False, momentum: float = 0.9, compensation_start: int = 1000,
        device=None, dtype=None,
    ) -> None:
        super().__init__(dim, eps=eps, affine=affine)
        windows = (window_size, window_size) if isinstance(window_size, int) else window_size
        if (
            not isinstance(windows, (tuple, list)) or len(windows) != 2
            or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in windows)
        ):
            raise ValueError(
                "unifiednorm: window_size must be a positive int or a pair (forward, backward) of "
                f"positive ints, got {window_size!r}"
            )
        for label, value in (("warmup_iters", warmup_iters),
                             ("compensation_start", compensation_start)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"unifiednorm: {label} must be an int >= 0, got {value!r}")
        self.warmup_iters = warmup_iters
        self.outlier_filtration = bool(outlier_filtration)
        self.momentum = self.unit_interval("momentum", momentum)
        self.compensation_start = compensation_start
        affine_params(self, dim, bias=True, device=device, dtype=dtype)
        stat = {"device": device, "dtype": dtype}
        self.running_var: Tensor
        self.ema_gz: Tensor
        self.buffer_x2: Tensor
        self.buffer_gz: Tensor
        self.iters: Tensor
        self.skip_counter: Tensor
        self.register_stats("running_var", torch.ones(dim, **stat))
        self.register_stats("ema_gz", torch.zeros(dim, **stat))
        self.register_stats("buffer_x2", torch.zeros(windows[0], dim, **stat))  # (W_f, C)
        self.register_stats("buffer_gz", torch.zeros(windows[1], dim, **stat))  # (W_b, C)
        self.register_buffer("iters", torch.zeros((), device=device, dtype=torch.long))
        self.register_buffer("skip_counter", torch.zeros((), device=device, dtype=torch.long))

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        xf = F.upcast(x)
        if not self.training:
            scale, shift = self._eval_affine()
            return (xf * scale.to(xf.dtype) + shift.to(xf.dtype)).to(x.dtype)
        weight = None if self.weight is None else self.weight.to(xf.dtype)
        bias = None if self.bias is None else self.bias.to(xf.dtype)
        self.iters.add_(1)
        t = int(self.iters)
        x2, _ = F.masked_mean_square(xf.detach(), mask)
        var, r, skip = self._forward_statistics(x2, t)
        var, r = var.to(xf.dtype), r.to(xf.dtype)

        def correction(gz: Tensor) -> Tensor:
            return self._gradient_statistics(gz, t, skip)

        y = _UnifiedFunction.apply(xf, weight, bias, mask, var, r, correction, self.eps)
        return y.to(x.dtype)

    def _forward_statistics(self, x2: Tensor, t: int) -> tuple[Tensor, Tensor, bool]:
        """Window update, outlier filtration, smoothing, r and running_var for call t."""
        window = self.buffer_x2
        w_f = window.shape[0]
        slot = t % w_f
        filtering = self.outlier_filtration and t >= self.warmup_iters
        if filtering:
            recorded = window.sqrt().var()  # unbiased, over all W_f×C entries
        window[slot] = x2
        skip = w_f == 1
        if filtering:
            spread = window.mean(0) - _geometric_mean(window)
            if bool((spread > w_f * recorded).any()):
                window[slot] = self.running_var
                skip = True
                self.skip_counter.add_(1)
        smooth = not (t <= w_f or t < self.warmup_iters or skip)
        var = _geometric_mean(window).to(x2.dtype) if smooth else x2
        running = self.running_var.to(x2.dtype)
        if t <= max(self.compensation_start, self.warmup_iters) or skip:
            r = torch.ones_like(var)
        else:
            r = (torch.sqrt(var + self.eps) / torch.sqrt(running + self.eps)).clamp(
                1 / _R_CLAMP, _R_CLAMP
            )
        self.running_var.copy_(self.momentum * running + (1 - self.momentum) * var)
        return var, r, skip

    def _gradient_statistics(self, gz: Tensor, t: int, skip: bool) -> Tensor:
        """Backward-window and ema_gz update for call t; the coefficient c of ĝ = g - c·z."""
        window = self.buffer_gz
        w_b = window.shape[0]
        window[t % w_b] = self.ema_gz if skip else gz
        windowed = not (t <= w_b or t < self.warmup_iters or skip)
        mean_gz = window.mean(0).to(gz.dtype) if windowed else gz
        ema = self.momentum * self.ema_gz.to(gz.dtype) + (1 - self.momentum) * mean_gz
        self.ema_gz.copy_(ema)
        return mean_gz if skip else ema

    def _eval_affine(self) -> tuple[Tensor, Tensor]:
        """(γ/sqrt(running_var + eps), β): the eval map y = scale·x + shift."""
        return F.affine_of_moments(None, self.running_var, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, window=({self.buffer_x2.shape[0]}, "
            f"{self.buffer_gz.shape[0]}), warmup_iters={self.warmup_iters}, "
            f"outlier_filtration={self.outlier_filtration}, momentum={self.momentum:g}"
        )
