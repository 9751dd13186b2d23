"""The identity: the "no normalization" entry of the zoo."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from normlab.norms.base import Norm, NormInfo
from normlab.norms.registry import register_norm


@register_norm("identity")
class Identity(Norm):
    """y = x. Used by normalization-free recipes (ReZero, SkipInit, T-Fixup) and as a control.

    Takes the common constructor so it can stand in any norm slot: `eps`, `device` and `dtype`
    are accepted and unused (there is nothing to store). It has no parameters, so an explicit
    `affine=True` is ignored with a warning; the default (False) is silent.

    In eval mode it is the per-channel map scale = 1, shift = 0 (fold "op"); having no
    parameter or buffer, `eval_affine()` gives CPU tensors in the default dtype unless asked
    for a `device`/`dtype`.
    """

    info = NormInfo(family="identity", stats="none", fold="op", paper="(no normalization)")

    def __init__(
        self, dim: int, *, eps: float = 0.0, affine: bool = False, device=None, dtype=None
    ) -> None:
        if affine:
            warnings.warn(
                "identity: affine=True is ignored: the identity has no parameters (y = x); "
                "pass affine=False, or use a norm with a learnable affine",
                stacklevel=2,
            )
        super().__init__(dim, eps=eps, affine=False)

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return x

    def _eval_affine(self) -> tuple[Tensor, Tensor]:
        return torch.ones(self.dim), torch.zeros(self.dim)
