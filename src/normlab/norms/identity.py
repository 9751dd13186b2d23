"""The identity: the "no normalization" entry of the zoo."""

from __future__ import annotations

import torch
from torch import Tensor

from normlab.norms.base import Norm, NormInfo
from normlab.norms.registry import register_norm


@register_norm("identity")
class Identity(Norm):
    """y = x. Used by normalization-free recipes (ReZero, SkipInit, T-Fixup) and as a control.

    Takes the common constructor (eps and affine are accepted and ignored, with no parameters)
    so it can stand in any norm slot.
    """

    info = NormInfo(family="identity", stats="none", fold="op", paper="(no normalization)")

    def __init__(
        self, dim: int, *, eps: float = 0.0, affine: bool = False, device=None, dtype=None
    ) -> None:
        super().__init__(dim, eps=eps, affine=False)

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return x

    def eval_affine(self) -> tuple[Tensor, Tensor]:
        return torch.ones(self.dim), torch.zeros(self.dim)
