"""LayerNorm."""

from __future__ import annotations

from torch import Tensor

from normlab import kernels
from normlab.norms.base import Norm, NormInfo, affine_params, zero_centre
from normlab.norms.registry import register_norm


@register_norm("layernorm")
class LayerNorm(Norm):
    """Layer normalization over the channels of each token.

        y = (x - mean(x)) / sqrt(var(x) + eps) * γ + β        (biased variance, over D)

    Args:
        dim: channels D.
        eps: added inside the square root; 1e-5 as `torch.nn.LayerNorm`.
        affine: learn γ (ones) and β (zeros).
        bias: learn β as well (False gives the bias-free LayerNorm of e.g. OLMo).
        zero_centered_gamma: store γ as 1 + w, w initialized to 0 and the 1 added in float32
            (TransformerEngine's `zero_centered_gamma`, Gemma's convention); `weight` holds w.

    Paper: "Layer Normalization" (Ba, Kiros, Hinton, 2016). Equals `torch.nn.LayerNorm(dim)`.
    Runs through `normlab.kernels.layer_norm` (backend "auto"; the numerics of
    `functional.layer_norm`, see docs/kernels.md for the tolerances).
    """

    info = NormInfo(
        family="layer", stats="token", fold="affine",
        paper="Layer Normalization (Ba, Kiros, Hinton, arXiv 2016)",
    )

    def __init__(
        self, dim: int, *, eps: float = 1e-5, affine: bool = True, bias: bool = True,
        zero_centered_gamma: bool = False, device=None, dtype=None,
    ) -> None:
        super().__init__(dim, eps=eps, affine=affine)
        affine_params(self, dim, bias=bias, device=device, dtype=dtype)
        zero_centre(self, zero_centered_gamma)

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return kernels.layer_norm(
            x, self.weight, self.bias, self.eps, zero_centered=bool(self.weight_offset)
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + (", zero_centered_gamma=True" if self.weight_offset else "")
