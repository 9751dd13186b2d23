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
