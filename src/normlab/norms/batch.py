"""Batch-statistics norms over tokens: BatchNorm and RepBN, and the maths PRepBN and BCN share.

Every norm built on it (batchnorm, repbn, prepbn, bcn) takes x of shape (..., C) and computes
per-channel statistics over every real token of the batch (mask True); padded tokens never
enter a mean, a variance or a running statistic. Where an official implementation lets padding
in (SLAB's LLaMA code masks only its final norm), normlab deliberately differs. Training uses
the batch moments and updates running estimates; eval uses the running estimates, so it works
with any batch size, 1 included.

Two caveats hold for all of them. In a causal LM the training statistics mix tokens across
positions and sequences, so a token's output depends on future tokens and on the other sequences
of the batch, and eval (running stats) differs from training. Statistics are local to one
process: nothing is synchronized across data-parallel ranks, as in the official code.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from normlab import functional as F
from normlab.norms.base import Norm, NormInfo, affine_params
from normlab.norms.registry import register_norm

_BN_PAPER = (
    "Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate "
    "Shift (Ioffe, Szegedy, ICML 2015)"
)
_SLAB_PAPER = (
    "SLAB: Efficient Transformers with Simplified Linear Attention and Progressive "
    "Re-parameterized Batch Normalization (Guo, Chen, Tang, Wang, ICML 2024)"
)


def batch_stats(
    x: Tensor,
    mask: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    *,
    training: bool,
    momentum: float,
) -> tuple[Tensor, Tensor]:
    """The per-channel (mean, biased variance) batch normalization divides by, shape (C,) each.

    Training: the moments over the real tokens of `x` (all leading axes flattened), in the
    statistics dtype; `running_mean`/`running_var` are updated in place as torch.nn.BatchNorm1d
    does, `r ← (1 − momentum)·r + momentum·s`, with the *unbiased* variance (n/(n−1)).
    Eval: the running estimates, read only.
    """
    if not training:
        dtype = F.compute_dtype(x.dtype)
        return running_mean.to(dtype), running_var.to(dtype)
    mean, var, count = F.masked_moments(x, mask)
    if count < 2:
        raise ValueError(
            f"batch statistics in training need at least 2 real tokens, got {count}: use a "
            f"larger batch (or fewer padded positions), or call .eval() to use the running "
            f"statistics"
        )
    with torch.no_grad():
        unbiased = var * (count / (count - 1))
        running_mean.mul_(1.0 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
        running_var.mul_(1.0 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
    return mean, var


def batch_norm(
    x: Tensor,
    mask: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """BatchNorm over tokens: y = (x − μ) / sqrt(σ² + eps) · γ + β, per channel.

    μ, σ² come from `batch_stats` (batch moments over real tokens in training, running
    estimates in eval). Every position is normalized, padded ones included, but padding never
    changes μ or σ². Returns the input dtype.
    """
    mean, var = batch_stats(
        x, mask, running_mean, running_var, training=training, momentum=momentum
    )
    y = (F.upcast(x) - mean) * torch.rsqrt(var + eps)
    return F.apply_affine(y, weight, bias).to(x.dtype)


def init_running_moments(norm: Norm, momentum: float, device=None, dtype=None) -> None:
    """Give `norm` its `momentum` and the buffers `running_mean` (zeros) and `running_var`
    (ones), shape (C,), kept in the statistics dtype."""
    norm.momentum = norm.unit_interval(
        "momentum", momentum, "the weight of the new batch in the running average"
    )
    norm.register_stats("running_mean", torch.zeros(norm.dim, device=device, dtype=dtype))
    norm.register_stats("running_var", torch.ones(norm.dim, device=device, dtype=dtype))


@register_norm("batchnorm")
class BatchNorm(Norm):
    """Batch normalization over the tokens of a batch, per channel.

        training: μ, σ² = mean and biased variance of channel c over all real tokens (mask True)
                  y = (x − μ) / sqrt(σ² + eps) · γ + β
                  r_μ ← (1 − m)·r_μ + m·μ,   r_σ² ← (1 − m)·r_σ² + m·σ²·n/(n − 1)
        eval:     y = (x − r_μ) / sqrt(r_σ² + eps) · γ + β        (a per-channel affine map)

    Axes: the statistics reduce over every leading axis of x (..., C), i.e. over B×T tokens.
    Without a mask it equals `torch.nn.BatchNorm1d(C)` on the (N, C) rows, train and eval,
    running statistics included. Training needs at least 2 real tokens (ValueError otherwise,
    as torch); eval works with any batch.

    Args:
        dim: channels C.
        eps: 1e-5, the torch default.
        momentum: m = 0.1, the torch default (weight of the new batch in the running average).
        affine: learn γ (ones) and β (zeros).

    Padding is excluded from the statistics and the running estimates. This is a deliberate
    choice; official code that normalizes with BatchNorm over tokens (e.g. SLAB's LLaMA RepBN,
    which masks only the final norm) lets padded tokens into the statistics elsewhere.

    Paper: "Batch Normalization: Accelerating Deep Network Training by Reducing Internal
    Covariate Shift" (Ioffe & Szegedy, ICML 2015).
    """

    info = NormInfo(
        family="batch", stats="batch", fold="op", paper=_BN_PAPER, has_running_stats=True
    )

    def __init__(
        self, dim: int, *, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
        device=None, dtype=None,
    ) -> None:
        super().__init__(dim, eps=eps, affine=affine)
        affine_params(self, dim, bias=True, device=device, dtype=dtype)
        init_running_moments(self, momentum, device=device, dtype=dtype)

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return batch_norm(
            x, mask, self.running_mean, self.running_var, self.weight, self.bias,
            training=self.training, momentum=self.momentum, eps=self.eps,
        )

    def _eval_affine(self) -> tuple[Tensor, Tensor]:
        return F.affine_of_moments(
            self.running_mean, self.running_var, self.weight, self.bias, self.eps
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, momentum={self.momentum:g}"


@register_norm("repbn")
class RepBN(BatchNorm):
    """Re-parameterizable BatchNorm: BatchNorm plus a learnable scalar skip.

        y = BN(x) + α·x          (BN exactly as `batchnorm`: real tokens only, running stats)
        eval: y = a⊙x + b,  a = γ/sqrt(r_σ² + eps) + α,  b = β − γ·r_μ/sqrt(r_σ² + eps)

    The eval form is a per-channel affine map that folds into the next Linear.

    Args:
        dim: channels C.
        eps: 1e-5 and momentum 0.1, the BatchNorm1d defaults used by the official code.
        affine: learn BN's γ and β (α is always learned).
        alpha_init: initial α; 1.0 for vision (the default), 0.0 for the LLM variant.
        bn_weight_init: initial γ; 1.0 for vision, 0.0 for the LLM variant (β starts at 0 in
            both). The LLM init `alpha_init=0, bn_weight_init=0` makes the layer output 0 at
            the start.

    Padding never enters the statistics (the official LLaMA code masks it in the final norm
    only; normlab masks it everywhere, deliberately).

    Paper: "SLAB: Efficient Transformers with Simplified Linear Attention and Progressive
    Re-parameterized Batch Normalization" (Guo, Chen, Tang, Wang, ICML 2024).
    """

    info = NormInfo(
        family="batch", stats="batch", fold="op", paper=_SLAB_PAPER, has_running_stats=True
    )

    def __init__(
        self, dim: int, *, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
        alpha_init: float = 1.0, bn_weight_init: float = 1.0, device=None, dtype=None,
    ) -> None:
        super().__init__(
            dim, eps=eps, momentum=momentum, affine=affine, device=device, dtype=dtype
        )
        if self.weight is None:
            if bn_weight_init != 1.0:
                raise ValueError(
                    f"repbn: bn_weight_init={bn_weight_init!r} needs affine=True (there is no γ "
                    f"to initialise with affine=False)"
                )
        else:
            nn.init.constant_(self.weight, bn_weight_init)
        self.alpha = nn.Parameter(torch.full((), float(alpha_init), device=device, dtype=dtype))

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        xf = F.upcast(x)
        y = super()._normalize(xf, mask) + self.alpha.to(xf.dtype) * xf
        return y.to(x.dtype)

    def _eval_affine(self) -> tuple[Tensor, Tensor]:
        scale, shift = super()._eval_affine()
        return scale + self.alpha.to(scale.dtype), shift
