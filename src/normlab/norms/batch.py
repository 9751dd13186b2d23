"""Batch-statistics norms over tokens: BatchNorm, RepBN, PRepBN (progressive LN → RepBN), BCN.

All of them take x of shape (..., C) and compute per-channel statistics over every real token of
the batch (mask True); padded tokens never enter a mean, a variance or a running statistic.
Where an official implementation lets padding in (SLAB's LLaMA code masks only its final norm),
normlab deliberately differs. Training uses the batch moments and updates running estimates;
eval uses the running estimates, so it works with any batch size, 1 included.

Two caveats hold for every norm here. In a causal LM the training statistics mix tokens across
positions and sequences, so a token's output depends on future tokens and on the other sequences
of the batch, and eval (running stats) differs from training. Statistics are local to one
process: nothing is synchronized across data-parallel ranks, as in the official code.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor, nn

from normlab.norms import functional as F
from normlab.norms.base import Norm, NormInfo, affine_params
from normlab.norms.registry import make_norm, register_norm

_BN_PAPER = (
    "Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate "
    "Shift (Ioffe, Szegedy, ICML 2015)"
)
_SLAB_PAPER = (
    "SLAB: Efficient Transformers with Simplified Linear Attention and Progressive "
    "Re-parameterized Batch Normalization (Guo, Chen, Tang, Wang, ICML 2024)"
)
_BCN_PAPER = (
    "Micro-Batch Training with Batch-Channel Normalization and Weight Standardization "
    "(Qiao, Wang, Liu, Shen, Yuille, arXiv 2019)"
)


# ---------------------------------------------------------------------------------------------
# Pure maths
# ---------------------------------------------------------------------------------------------


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


def batch_norm_eval_affine(
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as y = a·x + b: a = γ / sqrt(σ²_run + eps), b = β − a·μ_run."""
    scale = torch.rsqrt(running_var + eps)
    if weight is not None:
        scale = scale * weight.to(scale.dtype)
    shift = -running_mean * scale
    if bias is not None:
        shift = shift + bias.to(shift.dtype)
    return scale, shift


def token_group_norm(
    x: Tensor,
    groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Per-token group normalization with a per-group affine.

    The C channels of each token are split into `groups` consecutive groups of C/G channels;
    each group is normalized by its own mean and biased variance, then scaled and shifted by
    the group's weight[g] and bias[g] (shape (G,)). Statistics in fp32 for half inputs.
    """
    channels = x.shape[-1]
    if channels % groups:
        raise ValueError(f"token_group_norm: groups={groups} must divide the {channels} channels")
    xg = F.upcast(x).unflatten(-1, (groups, channels // groups))  # (..., G, C/G)
    y = F.layer_norm(xg, eps=eps)
    y = F.apply_affine(
        y,
        None if weight is None else weight.unsqueeze(-1),
        None if bias is None else bias.unsqueeze(-1),
    )
    return y.flatten(-2).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------


def _init_running_stats(norm: Norm, momentum: float, device=None, dtype=None) -> None:
    """Register `running_mean` (zeros) and `running_var` (ones), shape (C,), and `momentum`."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(
            f"{type(norm).__name__}: momentum must be in [0, 1] (the weight of the new batch in "
            f"the running average), got {momentum!r}"
        )
    norm.momentum = float(momentum)
    norm.register_buffer("running_mean", torch.zeros(norm.dim, device=device, dtype=dtype))
    norm.register_buffer("running_var", torch.ones(norm.dim, device=device, dtype=dtype))


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
        _init_running_stats(self, momentum, device=device, dtype=dtype)

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return batch_norm(
            x, mask, self.running_mean, self.running_var, self.weight, self.bias,
            training=self.training, momentum=self.momentum, eps=self.eps,
        )

    def eval_affine(self) -> tuple[Tensor, Tensor]:
        return batch_norm_eval_affine(
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

    def eval_affine(self) -> tuple[Tensor, Tensor]:
        scale, shift = super().eval_affine()
        return scale + self.alpha.to(scale.dtype), shift


@register_norm("prepbn")
class PRepBN(Norm):
    """Progressive re-parameterized BatchNorm: a token norm handing over to RepBN in training.

        warm phase (first `warm` ticks):  y = norm1(x)
        then, at tick k = 0, 1, …:        λ = r0 · max(step − k, 0) / step
                                          y = λ·norm1(x) + (1 − λ)·RepBN(x)
        eval:                             y = RepBN(x)     (a per-channel affine map; folds)

    λ starts at r0 and decays linearly to 0 over `step` ticks; from then on training is RepBN
    alone and matches eval. During the warm phase RepBN is not called, so its running
    statistics start moving only when the decay starts.

    Counting unit: a tick is `calls_per_tick` **training forward calls** of this module (eval
    calls do not count). Gradient accumulation, activation checkpointing (which re-runs
    forward) and a module called twice per step all advance the schedule faster than the
    optimizer; set `calls_per_tick` to the forward calls per optimizer step (the official
    LLaMA-350M setup advances once every 16 calls). The counter is the buffer `calls`, saved in
    the state_dict, so a resumed run continues the schedule where it stopped.

    If training stops while λ > 0, eval (RepBN alone) no longer matches training; switching such
    a module to eval warns. Give the running statistics enough steps after λ reaches 0.

    Args:
        dim: channels C.
        eps, momentum, alpha_init, bn_weight_init: RepBN's (1e-5, 0.1, 1.0, 1.0 = vision init;
            the LLM init is alpha_init=0, bn_weight_init=0 with eps = the RMSNorm eps).
        affine: learnable affines of both norms.
        warm: ticks of pure norm1 before the decay; 0 (vision), 10000 (official LLaMA-350M).
        step: ticks for λ to go from r0 to 0; 300000 by default (60000 for SLAB's DeiT/Swin).
        r0: initial λ, 1.0 in every official setting.
        norm1: the token norm handed over from, a registry name or class ("layernorm" or
            "rmsnorm"), built with `make_norm(norm1, dim, eps=norm1_eps, affine=affine)`.
        norm1_eps: 1e-6 (SLAB's vision LayerNorm; its Swin variants use 1e-5).
        calls_per_tick: training forward calls per schedule tick, 1 as the vision code.

    Padding never enters RepBN's statistics (a deliberate difference from the official LLaMA
    code, which masks only the final norm).

    Paper: "SLAB: Efficient Transformers with Simplified Linear Attention and Progressive
    Re-parameterized Batch Normalization" (Guo, Chen, Tang, Wang, ICML 2024).
    """

    info = NormInfo(
        family="batch", stats="batch", fold="op", paper=_SLAB_PAPER, has_running_stats=True
    )

    def __init__(
        self, dim: int, *, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
        alpha_init: float = 1.0, bn_weight_init: float = 1.0, warm: int = 0,
        step: int = 300000, r0: float = 1.0,
        norm1: str | type[Norm] | functools.partial = "layernorm", norm1_eps: float = 1e-6,
        calls_per_tick: int = 1, device=None, dtype=None,
    ) -> None:
        super().__init__(dim, eps=eps, affine=affine)
        for label, value, least in (("warm", warm, 0), ("step", step, 1),
                                    ("calls_per_tick", calls_per_tick, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"prepbn: {label} must be an int >= {least}, got {value!r}")
        if not r0 >= 0:
            raise ValueError(f"prepbn: r0 (the initial λ) must be >= 0, got {r0!r}")
        self.warm, self.step, self.r0, self.calls_per_tick = warm, step, float(r0), calls_per_tick
        self.norm1 = make_norm(norm1, dim, eps=norm1_eps, affine=affine, device=device, dtype=dtype)
        self.norm2 = RepBN(
            dim, eps=eps, momentum=momentum, affine=affine, alpha_init=alpha_init,
            bn_weight_init=bn_weight_init, device=device, dtype=dtype,
        )
        self.register_buffer("calls", torch.zeros((), dtype=torch.long, device=device))

    @property
    def lam(self) -> float:
        """The λ the next training call uses; 1.0 during the warm phase (norm1 alone)."""
        tick = int(self.calls) // self.calls_per_tick
        if tick < self.warm:
            return 1.0
        return self.r0 * max(self.step - (tick - self.warm), 0) / self.step

    @property
    def in_warmup(self) -> bool:
        """True while the next training call is in the pure-norm1 warm phase."""
        return int(self.calls) // self.calls_per_tick < self.warm

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        if not self.training:
            return self.norm2(x, mask)
        warming, lam = self.in_warmup, self.lam
        self.calls += 1
        if warming:
            return self.norm1(x, mask)
        xf = F.upcast(x)
        y = lam * self.norm1(xf, mask) + (1.0 - lam) * self.norm2(xf, mask)
        return y.to(x.dtype)

    def train(self, mode: bool = True) -> PRepBN:
        if not mode and self.training and int(self.calls) > 0 and self.lam > 0:
            warnings.warn(
                f"prepbn: switching to eval at λ={self.lam:.4g} (after {int(self.calls)} training "
                f"calls); eval uses RepBN alone, so it does not match training until λ reaches 0 "
                f"(warm={self.warm}, step={self.step} ticks of {self.calls_per_tick} call(s))",
                stacklevel=2,
            )
        return super().train(mode)

    def eval_affine(self) -> tuple[Tensor, Tensor]:
        return self.norm2.eval_affine()

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, warm={self.warm}, step={self.step}, r0={self.r0:g}, "
            f"calls_per_tick={self.calls_per_tick}"
        )


@register_norm("bcn")
class BatchChannelNorm(Norm):
    """Batch-Channel Normalization: BatchNorm, then a per-token group normalization.

        z = (x − μ_B) / sqrt(σ²_B + eps) · γ + β       per channel, batch stats (as `batchnorm`)
        y[g] = (z[g] − mean(z[g])) / sqrt(var(z[g]) + eps) · w_g + b_g    per token, group g

    The C channels of a token form G groups of C/G consecutive channels; w, b have shape (G,)
    (init 1 and 0), γ, β shape (C,). The BN part uses running statistics in eval; the group
    part always uses the token itself, so nothing folds exactly.

    Token adaptation: the convolutional BCN normalizes each (sample, group) over the group's
    channels *and* the sample's spatial positions. For (..., C) tokens that spatial extent is a
    single token: the group statistics are per token, which keeps information from leaking
    across tokens (a per-sequence version would let a causal LM see future tokens).

    Args:
        dim: channels C.
        eps: 1e-5 for both normalizations.
        momentum: 0.1, BN's running-average weight.
        affine: learn γ, β (per channel) and w, b (per group).
        groups: G. By default 32, lowered to the largest divisor of C that is <= 32 (silently:
            that is the default's meaning). An explicit G that does not divide C is lowered the
            same way with a warning.

    Not implemented: the official `estimate=True` mode (EstBN, normalizing with running
    estimates in training). Padding is excluded from the BN statistics.

    Paper: "Micro-Batch Training with Batch-Channel Normalization and Weight Standardization"
    (Qiao, Wang, Liu, Shen, Yuille, arXiv 2019).
    """

    info = NormInfo(
        family="batch", stats="batch", fold="none", paper=_BCN_PAPER, has_running_stats=True
    )

    def __init__(
        self, dim: int, *, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
        groups: int | None = None, device=None, dtype=None,
    ) -> None:
        super().__init__(dim, eps=eps, affine=affine)
        requested = 32 if groups is None else groups
        if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
            raise ValueError(f"bcn: groups must be a positive int, got {groups!r}")
        self.groups = F.largest_divisor_at_most(dim, requested)
        if groups is not None and self.groups != groups:
            warnings.warn(
                f"bcn: groups={groups} does not divide dim={dim}; using {self.groups} groups "
                f"(the largest divisor of {dim} that is <= {groups})",
                stacklevel=2,
            )
        affine_params(self, dim, bias=True, device=device, dtype=dtype)
        _init_running_stats(self, momentum, device=device, dtype=dtype)
        if affine:
            self.group_weight = nn.Parameter(torch.ones(self.groups, device=device, dtype=dtype))
            self.group_bias = nn.Parameter(torch.zeros(self.groups, device=device, dtype=dtype))
        else:
            self.register_parameter("group_weight", None)
            self.register_parameter("group_bias", None)

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        z = batch_norm(
            F.upcast(x), mask, self.running_mean, self.running_var, self.weight, self.bias,
            training=self.training, momentum=self.momentum, eps=self.eps,
        )
        y = token_group_norm(z, self.groups, self.group_weight, self.group_bias, self.eps)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, momentum={self.momentum:g}, groups={self.groups}"
