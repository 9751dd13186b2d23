"""The norm that starts a residual stream (BLOOM's embedding LayerNorm), recentred for Pre-RMSNorm.

An embedding norm writes s₀ = γ ⊙ n + β into the stream, n = LN(x) without affine. Its mean
over the D channels varies from token to token, so no per-channel edit makes it zero-mean. The
projection P = I − 11ᵀ/D does, and it is linear in n:

    P s₀ = (P·diag γ) n + P β = M n + c,   M = diag γ − 1γᵀ/D,   c = β − mean(β)

so the Pre-RMSNorm conversion (Jiang et al., NeurIPS 2023) replaces the norm by LN(x) without
affine followed by the D × D map (M, c); for the D−1 stream of Pre-CRMSNorm it keeps the first
D−1 rows. The statistics stay a LayerNorm's: its input, the embedding, is not recentred.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RecentredNorm(nn.Module):
    """y = M·LN(x) + c: LayerNorm without affine, then a Linear(D, out) (out = D or D − 1)."""

    def __init__(self, dim: int, out: int, *, eps: float, device=None, dtype=None) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.map = nn.Linear(dim, out, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.map(F.layer_norm(x, (self.dim,), eps=self.eps))

    def spec(self) -> dict:
        """The JSON recipe `translate.build_module` rebuilds this module from."""
        return {"type": "recentred_norm", "dim": self.dim, "out": self.map.out_features,
                "eps": self.eps}


@torch.no_grad()
def recentred(
    gamma: Tensor | None, beta: Tensor | None, dim: int, out: int, eps: float, **placement
) -> RecentredNorm:
    """The `RecentredNorm` writing P(γ ⊙ n + β), first `out` channels (maths in float64)."""
    g = torch.ones(dim, dtype=torch.float64) if gamma is None else gamma.detach().double().cpu()
    b = torch.zeros(dim, dtype=torch.float64) if beta is None else beta.detach().double().cpu()
    m = torch.diag(g) - g.unsqueeze(0).expand(dim, dim) / dim
    new = RecentredNorm(dim, out, eps=eps, **placement)
    new.map.weight.copy_(m[:out])
    new.map.bias.copy_((b - b.mean())[:out])
    return new
