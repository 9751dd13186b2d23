"""BCN: Batch-Channel Normalization of tokens, BatchNorm followed by a per-token GroupNorm."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from normlab import functional as F
from normlab.norms.base import Norm, NormInfo, affine_params
from normlab.norms.batch import batch_norm, init_running_moments
from normlab.norms.registry import register_norm

_BCN_PAPER = (
    "Micro-Batch Training with Batch-Channel Normalization and Weight Standardization "
    "(Qiao, Wang, Liu, Shen, Yuille, arXiv 2019)"
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
        groups: G, resolved by `functional.resolve_groups` as for `groupnorm`: by default the
            largest divisor of C that is <= min(32, C/2) (the official 32, lowered silently until
            it divides C and every group has two channels or more: a one-channel group of a
            token has variance 0 and would output b_g alone). An explicit G is used as given;
            one that does not divide C is lowered to the largest divisor <= G, and one that
            leaves one channel per group warns.

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
        self.groups = F.resolve_groups("bcn", dim, groups)
        affine_params(self, dim, bias=True, device=device, dtype=dtype)
        init_running_moments(self, momentum, device=device, dtype=dtype)
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
        size = self.dim // self.groups  # the per-group affine, repeated over its channels
        weight, bias = (
            None if p is None else p.repeat_interleave(size)
            for p in (self.group_weight, self.group_bias)
        )
        return F.group_norm(z, self.groups, weight, bias, self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, momentum={self.momentum:g}, groups={self.groups}"
