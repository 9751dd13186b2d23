"""SeeDNorm: RMSNorm whose gain is rescaled by the input itself."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from normlab import functional as F
from normlab.norms.base import Norm, NormInfo
from normlab.norms.registry import register_norm


@register_norm("seednorm")
class SeeDNorm(Norm):
    """Self-rescaled dynamic normalization: an RMSNorm with an input-dependent gain.

        y = [tanh(⟨x, β⟩)·α + γ] ⊙ x / RMS(x),   RMS(x) = sqrt(mean_D(x²) + eps)

    ⟨x, β⟩ is one scalar per token, a dot product of the *un-normalized* x with β ∈ R^D, so the
    gain keeps the input-norm information that RMSNorm discards; α, β, γ are per channel.
    With `heads` = H the D channels split into H consecutive heads of D/H channels, and head h
    uses tanh(⟨x_h, β_h⟩)·α_h (the paper's multi-head variant; RMS(x) stays over all D).

    Init (normlab's choice; the paper's values were not available to check): γ = 1, β = 0,
    α = 1. At init the layer is exactly RMSNorm (tanh(0) = 0) and β still gets a gradient,
    x̂·α·⟨x, ·⟩, because α ≠ 0; α = β = 0 together would leave both without one.

    Args:
        dim: channels D.
        eps: 1e-6 inside the root, as `rmsnorm`.
        heads: H, which must divide D; 1 (one dot product per token) by default.
        affine: learn the static gain γ; False keeps γ = 1. α and β are learned either way:
            they are the method.

    γ does not fold into the next Linear on its own (the dynamic term would need α/γ), so
    nothing folds (info.fold = "none"). The dot product and tanh run in float32 for half
    inputs.

    Paper: "SeeDNorm: Self-Rescaled Dynamic Normalization" (Cai, Zhu, Liu, Min, arXiv
    2510.22777, 2025); no official code was found.
    """

    info = NormInfo(
        family="rms", stats="token", fold="none",
        paper="SeeDNorm: Self-Rescaled Dynamic Normalization (Cai, Zhu, Liu, Min, arXiv 2025)",
    )

    def __init__(
        self, dim: int, *, eps: float = 1e-6, heads: int = 1, affine: bool = True, device=None,
        dtype=None,
    ) -> None:
        super().__init__(dim, eps=eps, affine=affine)
        if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1 or dim % heads:
            raise ValueError(f"seednorm: heads must be a positive int dividing dim={dim}, "
                             f"got {heads!r}")
        self.heads = heads
        self.alpha = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        self.beta = nn.Parameter(torch.zeros(dim, device=device, dtype=dtype))
        gamma = torch.ones(dim, device=device, dtype=dtype)
        if affine:
            self.weight = nn.Parameter(gamma)
        else:
            self.register_buffer("weight", gamma, persistent=False)

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return F.seed_norm(x, self.alpha, self.beta, self.weight, self.eps, self.heads)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, heads={self.heads}"
