"""Weight Standardization as a `torch.nn.utils.parametrize` parametrization."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from normlab.weights.select import LINEAR_AND_CONV, Predicate, select_modules


class WeightStandardization(nn.Module):
    """Standardize each output unit's weights: zero mean, unit (unbiased) variance.

        Ŵ_o = (W_o - mean(W_o)) / sqrt(var(W_o) + eps)

    Axes: everything but the output axis 0, so `in` for a Linear weight (out, in) and
    (in/groups, *kernel) for a convolution weight (out, in/groups, *kernel). The variance is the
    unbiased one and eps = 1e-5 sits inside the root, as in the official code; Ŵ is recomputed
    from the stored W at every access, so gradients reach W through the standardization.

    Not for transposed convolutions, whose weights put the input axis first.

    Paper: "Micro-Batch Training with Batch-Channel Normalization and Weight Standardization"
    (Qiao, Wang, Liu, Shen, Yuille, arXiv 2019).
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        if not eps >= 0:
            raise ValueError(f"WeightStandardization: eps must be >= 0, got {eps!r}")
        self.eps = float(eps)

    def forward(self, weight: Tensor) -> Tensor:
        axes = tuple(range(1, weight.dim()))
        mean = weight.mean(axes, keepdim=True)
        var = weight.var(axes, keepdim=True, correction=1)
        return (weight - mean) * torch.rsqrt(var + self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps:g}"


def weight_standardize(
    module: nn.Module,
    *,
    eps: float = 1e-5,
    types: tuple[type[nn.Module], ...] = LINEAR_AND_CONV,
    predicate: Predicate | None = None,
) -> list[str]:
    """Register `WeightStandardization` on the `weight` of `module` and of every submodule that
    is a Linear/Conv1d/2d/3d (or one of `types`) and satisfies `predicate(name, module)`.

    Returns the qualified names of the changed modules ("" is `module` itself). Remove with
    `torch.nn.utils.parametrize.remove_parametrizations(m, "weight")`.

    Raises:
        ValueError: nothing selected; a selected weight has one element per output unit (its
            unbiased variance is undefined); or a weight already has WeightStandardization.
    """
    chosen = select_modules(module, types, predicate, what="weight_standardize")
    for name, m in chosen:
        label = name or "<root>"
        weight = m.weight
        if weight.dim() < 2 or weight[0].numel() < 2:
            raise ValueError(
                f"weight_standardize: {label} has {weight[0].numel()} weight(s) per output unit; "
                f"standardization needs at least 2"
            )
        if parametrize.is_parametrized(m, "weight") and any(
            isinstance(p, WeightStandardization) for p in m.parametrizations.weight
        ):
            raise ValueError(f"weight_standardize: {label} is already weight-standardized")
    for _, m in chosen:
        parametrize.register_parametrization(m, "weight", WeightStandardization(eps))
    return [name for name, _ in chosen]
