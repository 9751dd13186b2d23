"""The root-mean-square family: RMSNorm, pRMSNorm, CRMSNorm, ScaleNorm."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from normlab import functional as F
from normlab import kernels
from normlab.norms.base import Norm, NormInfo, affine_params, zero_centre
from normlab.norms.registry import register_norm

_RMSNORM_PAPER = "Root Mean Square Layer Normalization (Zhang, Sennrich, NeurIPS 2019)"


@register_norm("rmsnorm")
class RMSNorm(Norm):
    """Root-mean-square normalization: re-scaling without re-centring.

        y = x / sqrt(mean(x²) + eps) * γ                 (default, eps inside the root)
        y = x / (sqrt(mean(x²)) + eps) * γ               (eps_outside=True, the paper's code)

    Args:
        dim: channels D.
        eps: 1e-6, the LLaMA value. The official RMSNorm code adds eps=1e-8 outside the root;
            pass `eps=1e-8, eps_outside=True` for it. The default follows LLaMA and
            `torch.nn.RMSNorm` so that surgery on HuggingFace models and the fused kernels agree.
        affine: learn γ (ones).
        bias: also learn an offset β (zeros), the paper's optional `bias=True`.
        zero_centered_gamma: store γ as 1 + w with w initialized to 0 (Gemma's RMSNorm,
            TransformerEngine's name for it): y = x / sqrt(mean(x²) + eps) · (1 + w). The 1 is
            added in float32 and the product cast once at the end (multiply, then cast), so a
            bfloat16 model gives the outputs of `transformers`' GemmaRMSNorm; weight decay then
            pulls γ towards 1 rather than 0. `weight` holds w; surgery reads γ = 1 + w.

    Paper: "Root Mean Square Layer Normalization" (Zhang & Sennrich, NeurIPS 2019).
    The default (eps inside) runs through `normlab.kernels.rms_norm` (backend "auto");
    eps_outside=True stays on `functional.rms_norm`.
    """

    info = NormInfo(family="rms", stats="token", fold="affine", paper=_RMSNORM_PAPER)

    def __init__(
        self, dim: int, *, eps: float = 1e-6, affine: bool = True, bias: bool = False,
        eps_outside: bool = False, zero_centered_gamma: bool = False, device=None, dtype=None,
    ) -> None:
        super().__init__(dim, eps=eps, affine=affine)
        self.eps_outside = eps_outside
        affine_params(self, dim, bias=bias, device=device, dtype=dtype)
        zero_centre(self, zero_centered_gamma)

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        zero_centered = bool(self.weight_offset)
        if self.eps_outside:
            gain = F.zero_centered_gain(self.weight) if zero_centered else self.weight
            return F.rms_norm(x, gain, self.eps, eps_outside=True, bias=self.bias)
        return kernels.rms_norm(
            x, self.weight, self.bias, self.eps, zero_centered=zero_centered
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + (", zero_centered_gamma=True" if self.weight_offset else "")


@register_norm("prmsnorm")
class PartialRMSNorm(Norm):
    """Partial RMSNorm (pRMSNorm): the RMS is estimated from the first k = int(D·p) channels.

        y = x / sqrt(mean(x[:k]²) + eps) * γ,   k = max(1, int(D·p))

    The slice is fixed (the first k channels), not random. The statistic ignores the other
    channels, so the layer is invariant to scaling the whole vector but not the other channels.

    Args:
        p: fraction of channels in the statistic; 0.0625 (6.25 %) as the paper recommends.
        eps, eps_outside, affine, bias: as `RMSNorm`.

    Paper: "Root Mean Square Layer Normalization" (Zhang & Sennrich, NeurIPS 2019).
    """

    info = NormInfo(family="rms", stats="token", fold="affine", paper=_RMSNORM_PAPER)

    def __init__(
        self, dim: int, *, p: float = 0.0625, eps: float = 1e-6, affine: bool = True,
        bias: bool = False, eps_outside: bool = False, device=None, dtype=None,
    ) -> None:
        super().__init__(dim, eps=eps, affine=affine)
        if not 0.0 < p <= 1.0:
            raise ValueError(f"prmsnorm: p must be in (0, 1], got {p!r}")
        self.p = p
        self.k = max(1, int(dim * p))
        self.eps_outside = eps_outside
        affine_params(self, dim, bias=bias, device=device, dtype=dtype)

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return F.rms_norm(
            x, self.weight, self.eps, partial=self.k, eps_outside=self.eps_outside, bias=self.bias
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p:g} (k={self.k})"


@register_norm("crmsnorm")
class CRMSNorm(Norm):
    """Compressed RMSNorm: RMSNorm of a zero-mean (d+1)-vector stored in d coordinates.

    A zero-mean x ∈ R^{D+1} is stored as x̃ = x[:D]; the dropped coordinate is -Σx̃. Then

        y = x̃ / sqrt((Σ x̃² + (Σ x̃)²) / (D + 1) + eps) * γ

    equals RMSNorm(x)[:D]. Pre-CRMSNorm Transformers keep the residual stream in this form.

    Args:
        dim: stored channels D (the model width minus one).
        eps: 1e-6, inside the root as RMSNorm.
        affine: learn γ (ones); an exact conversion folds γ into the readers and uses False.

    Paper: "Pre-RMSNorm and Pre-CRMSNorm Transformers: Equivalent and Efficient Pre-LN
    Transformers" (Jiang, Gu, Zhu, Pan, NeurIPS 2023).
    """

    info = NormInfo(
        family="rms", stats="token", fold="affine",
        paper="Pre-RMSNorm and Pre-CRMSNorm Transformers (Jiang et al., NeurIPS 2023)",
    )

    def __init__(
        self, dim: int, *, eps: float = 1e-6, affine: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__(dim, eps=eps, affine=affine)
        affine_params(self, dim, bias=False, device=device, dtype=dtype)

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return F.crms_norm(x, self.weight, self.eps)


@register_norm("scalenorm")
class ScaleNorm(Norm):
    """ScaleNorm: project each token onto the sphere of learned radius g.

        y = g · x / max(||x||₂, eps),   g a single scalar, initialised to sqrt(D)

    Args:
        eps: 1e-5 (official code), a floor on the norm, not inside a root.
        affine: learn g; with False g stays the constant sqrt(D).

    Paper: "Transformers without Tears: Improving the Normalization of Self-Attention"
    (Nguyen & Salazar, IWSLT 2019). The init sqrt(D) matters: 1 and D^-1/2 are known bugs.
    """

    info = NormInfo(
        family="rms", stats="token", fold="affine",
        paper="Transformers without Tears (Nguyen, Salazar, IWSLT 2019)",
    )

    def __init__(
        self, dim: int, *, eps: float = 1e-5, affine: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__(dim, eps=eps, affine=affine)
        gain = torch.full((), math.sqrt(dim), device=device, dtype=dtype)
        if affine:
            self.gain = nn.Parameter(gain)
        else:
            self.register_buffer("gain", gain)

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return F.scale_norm(x, self.gain, self.eps)
