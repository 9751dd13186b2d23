"""FlashNorm: a norm folded whole into the Linears that read it, its 1/rms applied after the matmul.

Graef et al., "FlashNorm: fast normalization for LLMs" (arXiv 2407.09577):
for RMSNorm → Linear, W(γ ⊙ x / rms(x)) = (x (W·diag γ)ᵀ) / rms(x), because rms(x) is one scalar
per token; the norm disappears, its weight lives in the Linear, and the division moves after
the matmul, where it can run in parallel with it. The same holds for LayerNorm, whose mean
subtraction is the linear map P = I − 11ᵀ/D: W(γ ⊙ (x − μ)/σ + β) + b = (x (W·diag γ·P)ᵀ)/σ +
(Wβ + b), σ = sqrt(var(x) + eps). A Linear bias is added after the division (the paper's
"exact for bias-free Linears" holds for any bias added afterwards).

    y = F.linear(x, W') · rsqrt(stat(x) + eps) + b'      stat = mean(x²) (RMSNorm) or var(x)

The statistic is computed in at least float32 whatever the input dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DeferredNormLinear(nn.Linear):
    """A Linear reading a folded-away norm: y = (x W'ᵀ)·rsqrt(stat(x) + eps) + b'.

    Args:
        in_features, out_features, bias: as `nn.Linear`.
        eps: the folded norm's eps.
        center: True for a LayerNorm (stat = var, W' includes the centring), False for RMSNorm.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 eps: float, center: bool, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.eps, self.center = eps, center

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))  # at least fp32
        stat = x32.var(-1, unbiased=False, keepdim=True) if self.center else x32.pow(2).mean(
            -1, keepdim=True)
        y = F.linear(x, self.weight) * torch.rsqrt(stat + self.eps).to(x.dtype)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        norm = "layernorm" if self.center else "rmsnorm"
        return f"{super().extra_repr()}, deferred {norm}, eps={self.eps:g}"

    def spec(self) -> dict:
        """The JSON recipe `translate.build_module` rebuilds this module from."""
        return {"type": "deferred_linear", "in": self.in_features, "out": self.out_features,
                "bias": self.bias is not None, "eps": self.eps, "center": self.center}


@torch.no_grad()
def deferred_reader(
    weight: Tensor, bias: Tensor | None, gamma: Tensor | None, beta: Tensor | None, *,
    eps: float, center: bool,
) -> DeferredNormLinear:
    """The `DeferredNormLinear` computing W(γ ⊙ N(x) + β) + b, from a reader's (out, in) weight.

    The maths runs in float64 and is stored in the weight's dtype, on its device."""
    w = weight.double()
    out, dim = w.shape
    b = bias.double() if bias is not None else None
    if beta is not None and bool(beta.ne(0).any()):
        shift = w @ beta.to(w.device, torch.float64)
        b = shift if b is None else b + shift
    if gamma is not None:
        w = w * gamma.to(w.device, torch.float64)
    if center:
        w = w - w.mean(1, keepdim=True)
    new = DeferredNormLinear(dim, out, b is not None, eps=eps, center=center,
                             device=weight.device, dtype=weight.dtype)
    new.weight.copy_(w)
    if b is not None:
        new.bias.copy_(b)
    return new
