"""Group-wise normalization of tokens: GroupNorm, EvoNorm-S0 and EvoNorm-B0.

These methods were defined for images (N, C, H, W). On tokens (..., C) there are no spatial
axes: GroupNorm and EvoNorm-S0 reduce over the channels of one group of one token, and
EvoNorm-B0's instance statistic runs over the tokens of a sequence (axis -2).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from normlab import functional as F
from normlab.norms.base import Norm, NormInfo, affine_params
from normlab.norms.registry import register_norm

_EVONORM_PAPER = "Evolving Normalization-Activation Layers (Liu, Brock, Simonyan, Le, NeurIPS 2020)"


def evonorm_s0(
    x: Tensor, v: Tensor, groups: int, weight: Tensor | None = None,
    bias: Tensor | None = None, eps: float = 1e-5,
) -> Tensor:
    """EvoNorm-S0 of each token: y = x·σ(v·x) / sqrt(var_g(x) + eps) * weight + bias, with the
    biased group variance var_g of the input x (not of the gated numerator)."""
    xg, _, var = F.group_moments(x, groups)
    vg = v.to(xg.dtype).unflatten(-1, (groups, -1))
    y = (xg * torch.sigmoid(vg * xg) * torch.rsqrt(var + eps)).flatten(-2)
    return F.apply_affine(y, weight, bias).to(x.dtype)


def sequence_variance(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-channel biased variance over the token axis -2 of each sample, real tokens only.

    x: (..., T, C) in its statistics dtype; mask: (..., T) or None. Returns (..., 1, C). A sample
    with no real token gets variance 0 rather than NaN.
    """
    if mask is None:
        mean = x.mean(-2, keepdim=True)
        return (x - mean).square().mean(-2, keepdim=True)
    real = mask.unsqueeze(-1)  # (..., T, 1)
    count = real.sum(-2, keepdim=True).clamp_min(1).to(x.dtype)
    # where(), not a product: inf or NaN at padded positions must not reach the sums.
    mean = torch.where(real, x, 0).sum(-2, keepdim=True) / count
    return torch.where(real, (x - mean).square(), 0).sum(-2, keepdim=True) / count


def evonorm_b0(
    x: Tensor, v: Tensor, var: Tensor, mask: Tensor | None = None,
    weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5,
) -> Tensor:
    """EvoNorm-B0: y = x / max(sqrt(var + eps), v·x + sqrt(var_seq(x) + eps)) * weight + bias.

    `var` is the per-channel (C,) batch variance (or the running one in eval); var_seq is
    `sequence_variance` of each sample over axis -2. A 1-D input is a single token.
    """
    if x.dim() == 1:  # one token: a sample of length 1
        single = None if mask is None else mask.unsqueeze(0)
        return evonorm_b0(x.unsqueeze(0), v, var, single, weight, bias, eps).squeeze(0)
    xf = F.upcast(x)
    instance_std = torch.sqrt(sequence_variance(xf, mask) + eps)  # (..., 1, C)
    batch_std = torch.sqrt(var.to(xf.dtype) + eps)
    y = xf / torch.maximum(batch_std, v.to(xf.dtype) * xf + instance_std)
    return F.apply_affine(y, weight, bias).to(x.dtype)


@register_norm("groupnorm")
class GroupNorm(Norm):
    """Group normalization of each token: its C channels split into G groups of C/G.

        y = (x - mean_g) / sqrt(var_g + eps) · γ + β     (biased variance, per token and group)

    Axes: the C/G channels of one group of one token; no statistic crosses tokens, so the norm
    is causal and identical in train and eval. Equals `torch.nn.GroupNorm(G, C)` applied to
    `x.reshape(-1, C)` (images would add their spatial axes to the reduction; tokens have none).
    With G = 1 this is LayerNorm; with G = C every channel is normalized to 0.

    Args:
        dim: channels C.
        groups: G; by default the largest divisor of C that is <= min(32, C/2): the paper's
            32, lowered silently until it divides C and until every group has two channels or
            more (a one-channel group of a token would be all zeros). An explicit G is used as
            given; one that does not divide C warns and is lowered to the largest divisor <= G,
            and one that leaves one channel per group warns (`functional.resolve_groups`).
        eps: 1e-5, as `torch.nn.GroupNorm`.
        affine: learn a per-channel γ (ones) and β (zeros).

    Paper: "Group Normalization" (Wu, He, ECCV 2018).
    """

    info = NormInfo(
        family="group", stats="token", fold="affine",
        paper="Group Normalization (Wu, He, ECCV 2018)",
    )

    def __init__(
        self, dim: int, *, groups: int | None = None, eps: float = 1e-5, affine: bool = True,
        device=None, dtype=None,
    ) -> None:
        super().__init__(dim, eps=eps, affine=affine)
        self.groups = F.resolve_groups("groupnorm", dim, groups)
        affine_params(self, dim, bias=True, device=device, dtype=dtype)

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return F.group_norm(x, self.groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, groups={self.groups}"


@register_norm("evonorm_s0")
class EvoNormS0(Norm):
    """EvoNorm-S0: a sample-wise normalization-activation layer (a gated GroupNorm).

        y = x · σ(v ⊙ x) / sqrt(var_g(x) + eps) · γ + β

    var_g is the biased variance of the original x over the C/G channels of x's group, per
    token. The image version also reduces over (H, W); a single token has no such axes, so the
    statistic stays inside the token: the layer is causal and identical in train and eval.

    Args:
        dim: channels C.
        groups: G = 32 by default, lowered until it divides C as the authors do (timm asserts
            instead), and to at most C/2: a one-channel group of a token has variance 0 and the
            output would be x·σ(vx)/sqrt(eps). An explicit G is resolved as for `groupnorm`
            (`functional.resolve_groups`).
        eps: 1e-5, the authors' value.
        affine: learn γ (ones) and β (zeros). The gate's v (ones, per channel) is learned either
            way: it is part of the activation, not of the affine.

    Not foldable: the gate and the per-token statistic are data-dependent.

    Paper: "Evolving Normalization-Activation Layers" (Liu, Brock, Simonyan, Le, NeurIPS 2020).
    """

    info = NormInfo(family="group", stats="token", fold="none", paper=_EVONORM_PAPER)

    def __init__(
        self, dim: int, *, groups: int | None = None, eps: float = 1e-5, affine: bool = True,
        device=None, dtype=None,
    ) -> None:
        super().__init__(dim, eps=eps, affine=affine)
        self.groups = F.resolve_groups("evonorm_s0", dim, groups)
        self.v = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        affine_params(self, dim, bias=True, device=device, dtype=dtype)

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return evonorm_s0(x, self.v, self.groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, groups={self.groups}"


@register_norm("evonorm_b0")
class EvoNormB0(Norm):
    """EvoNorm-B0: a batch-dependent normalization-activation layer.

        y = x / max(sqrt(var_b + eps), v ⊙ x + sqrt(var_s(x) + eps)) · γ + β

    Axes, for x of shape (..., T, C): var_b is the biased variance per channel over every real
    token of the batch; var_s is the biased variance per channel over the T tokens (axis -2) of
    each sample, real tokens only. Every axis before -2 indexes samples; a 2-D input (T, C) is
    one sample of T tokens and a 1-D input a single token.

    Train: var_b from the batch (padding excluded), and
        running_var ← (1 - momentum)·running_var + momentum·var_b   (biased, as the authors do;
    timm rescales by n/(n-1) and uses eps 1e-3). Eval: var_b = running_var.

    Causality: var_s spans the whole sequence, so in a causal LM a token's output depends on
    later tokens of its sequence, in training and in eval alike; var_b in training also mixes
    sequences. Use it for encoders, or as a studied ablation in decoders.

    Args:
        dim: channels C.
        eps: 1e-5, the authors' value for B0 and S0 (timm: 1e-3 for B0).
        momentum: 0.1, weight of the new batch variance in the running one.
        affine: learn γ (ones) and β (zeros). v (ones, per channel) is learned either way.

    Not foldable: max() and the per-sample statistic are data-dependent.

    Paper: "Evolving Normalization-Activation Layers" (Liu, Brock, Simonyan, Le, NeurIPS 2020).
    """

    info = NormInfo(
        family="group", stats="batch", fold="none", paper=_EVONORM_PAPER, has_running_stats=True
    )

    def __init__(
        self, dim: int, *, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
        device=None, dtype=None,
    ) -> None:
        super().__init__(dim, eps=eps, affine=affine)
        self.momentum = self.unit_interval("momentum", momentum)
        self.v = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        affine_params(self, dim, bias=True, device=device, dtype=dtype)
        self.register_stats("running_var", torch.ones(dim, device=device, dtype=dtype))

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        if self.training:
            _, var, _ = F.masked_moments(x, mask)
            with torch.no_grad():
                self.running_var.lerp_(var.to(self.running_var.dtype), self.momentum)
        else:
            var = self.running_var
        return evonorm_b0(x, self.v, var, mask, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, momentum={self.momentum:g}"
