"""The "reference" backend: `normlab.functional` under eager autograd.

Slow but obviously right: every other backend is tested against it. The residual variants add
in the input dtype first, so every backend normalizes the same (rounded) new residual.
"""

from __future__ import annotations

from torch import Tensor

from normlab import functional as F


def rms_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    return F.rms_norm(x, weight, eps, bias=bias)


def layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    return F.layer_norm(x, weight, bias, eps)


def dyt(x: Tensor, alpha: Tensor | float, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    return F.dyt(x, alpha, weight, bias)


def derf(
    x: Tensor, alpha: Tensor | float, shift: Tensor | float, weight: Tensor | None,
    bias: Tensor | None,
) -> Tensor:
    return F.derf(x, alpha, shift, weight, bias)


def gated_rms_norm(
    x: Tensor, gate: Tensor | None, weight: Tensor | None, group_size: int, eps: float,
    norm_before_gate: bool,
) -> Tensor:
    return F.gated_rms_norm(x, gate, weight, group_size, eps, norm_before_gate=norm_before_gate)
