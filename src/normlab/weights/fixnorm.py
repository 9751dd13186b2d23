"""FixNorm: embedding rows of unit L2 norm, as a `torch.nn.utils.parametrize` parametrization."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize


class UnitRows(nn.Module):
    """Scale every row of a matrix to unit L2 norm: ê_i = e_i / max(||e_i||₂, eps).

    eps = 1e-12 (the default of `torch.nn.functional.normalize`, which the official code calls)
    only guards all-zero rows, such as a padding index, which stay zero.
    """

    def __init__(self, eps: float = 1e-12) -> None:
        super().__init__()
        if not eps > 0:
            raise ValueError(f"UnitRows: eps must be > 0, got {eps!r}")
        self.eps = float(eps)

    def forward(self, weight: Tensor) -> Tensor:
        norm = torch.linalg.vector_norm(weight, dim=-1, keepdim=True)
        return weight / norm.clamp_min(self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps:g}"


def fix_norm(embedding: nn.Embedding, *, eps: float = 1e-12) -> nn.Embedding:
    """FixNorm: make every row of `embedding.weight` unit-norm, recomputed from the stored rows
    at each access (gradients reach them through the normalization). Returns `embedding`.

    The paper uses the unit rows in both places of a tied embedding: the input embedding,
    multiplied by sqrt(D) (that scale is the model's job, not done here), and the output
    projection logits = h · Êᵀ. A head that shares the Parameter directly (`head.weight =
    emb.weight`) reads the stored rows, not the unit ones: tie by reading `embedding.weight`
    in the head's forward instead.

    Paper: "Transformers without Tears: Improving the Normalization of Self-Attention"
    (Nguyen, Salazar, IWSLT 2019); the official code draws the rows from U(-0.01, 0.01).
    """
    if not isinstance(embedding, nn.Embedding):
        raise TypeError(
            f"fix_norm expects an nn.Embedding, got {type(embedding).__name__}; "
            f"pass the model's token embedding module"
        )
    if parametrize.is_parametrized(embedding, "weight") and any(
        isinstance(p, UnitRows) for p in embedding.parametrizations.weight
    ):
        raise ValueError("fix_norm: this embedding already has unit rows")
    parametrize.register_parametrization(embedding, "weight", UnitRows(eps))
    return embedding
