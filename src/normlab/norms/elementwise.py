"""Elementwise replacements for normalization: DyT, Derf and ELN (no statistics at all)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from normlab import kernels
from normlab.norms import functional as F
from normlab.norms.base import Norm, NormInfo, Squash, affine_params
from normlab.norms.registry import register_norm


def eln(
    x: Tensor,
    beta: Tensor | float,
    shift: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
) -> Tensor:
    """Elementwise Layer Normalization over the last axis (C channels):

        y_i = sqrt(C - 1) · (x_i - μ_i) / sqrt(β + (x_i - μ_i)²) · weight_i + bias_i

    `shift` is μ (per channel, or None for 0) and `beta` the scalar β > 0. Every output lies in
    (-sqrt(C - 1), sqrt(C - 1)) before the affine, the range of LayerNorm's outputs.
    """
    xf = F.upcast(x)
    if shift is not None:
        xf = xf - shift.to(xf.dtype)
    b = beta.to(xf.dtype) if isinstance(beta, Tensor) else beta
    y = math.sqrt(xf.shape[-1] - 1) * xf * torch.rsqrt(b + xf.square())
    return F.apply_affine(y, weight, bias).to(x.dtype)


@register_norm("dyt")
class DyT(Norm):
    """Dynamic Tanh: an elementwise stand-in for LayerNorm/RMSNorm.

        y = γ ⊙ tanh(α·x) + β,   α one learnable scalar, γ/β per channel

    Args:
        dim: channels C.
        alpha_init: α₀ = 0.5, the default of the official code for vision and speech models.
            Language models need smaller, width-dependent values (the paper's LLaMA-7B runs use
            0.8 before attention and 0.2 before the FFN and the final norm: a model config's
            `norm_kwargs_by_position={"attn": {"alpha_init": 0.8}, "mlp": {"alpha_init": 0.2},
            "outside": {"alpha_init": 0.2}}`).
        affine: learn γ (ones) and β (zeros). α is learned either way, as in the official code.
        bias: learn β; False gives the official LLaMA variant y = γ ⊙ tanh(α·x).
        eps: accepted for the common norm constructor and unused: tanh needs no guard.

    Train and eval are identical; nothing is stored. Only γ/β fold into an adjacent Linear.

    Paper: "Transformers without Normalization" (Zhu, Chen, He, LeCun, Liu, CVPR 2025).
    """

    info = NormInfo(
        family="elementwise", stats="none", fold="affine",
        paper="Transformers without Normalization (Zhu, Chen, He, LeCun, Liu, CVPR 2025)",
        scalars=("alpha",), squash=Squash("tanh", gain="alpha"),
    )

    def __init__(
        self, dim: int, *, alpha_init: float = 0.5, eps: float = 0.0, affine: bool = True,
        bias: bool = True, device=None, dtype=None,
    ) -> None:
        super().__init__(dim, eps=eps, affine=affine)
        if not math.isfinite(alpha_init):
            raise ValueError(f"dyt: alpha_init must be a finite number, got {alpha_init!r}")
        self.alpha_init = float(alpha_init)
        self.alpha = nn.Parameter(torch.full((), self.alpha_init, device=device, dtype=dtype))
        affine_params(self, dim, bias=bias, device=device, dtype=dtype)

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return kernels.dyt(x, self.alpha, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.dim}, alpha_init={self.alpha_init:g}, affine={self.affine}"


@register_norm("eln")
class ELN(Norm):
    """Elementwise Layer Normalization: LayerNorm's per-channel response, without statistics.

        y_i = sqrt(C - 1) · (x_i - μ_i) / sqrt(β + (x_i - μ_i)²) · γ_i + b_i

    The paper derives this from LayerNorm over C channels: with m' the mean and
    S = Σ_{k≠i} (x_k - m')² the scatter of the *other* C - 1 channels, LN(x)_i equals the formula
    above exactly for μ_i = m' and β = C/(C-1)·S. ELN freezes μ and β instead of computing them,
    so each channel is squashed on its own: bounded by ±sqrt(C - 1), like LN's outputs.

    Parameters (normlab's choice; the paper leaves open whether μ and β are learned and how):
        μ (`shift`): learnable, per channel, initialised to 0.
        β: one learnable positive scalar, stored as `log_beta` (β = exp(log_beta), so it stays
            positive without clamping), initialised to log(C).

    Why β₀ = C. Take independent zero-mean, unit-variance channels. LayerNorm gives
    y_i = (x_i - m)/σ ≈ x_i (m ≈ 0, σ ≈ 1). ELN with μ = 0 gives, for x_i² ≪ β,
    y_i ≈ sqrt((C-1)/β)·x_i; with β = C that is sqrt(1 - 1/C)·x_i = (1 - 1/(2C) + O(C⁻²))·x_i.
    Unit-variance inputs have |x_i| = O(1) ≪ sqrt(C), so at initialisation ELN ≈ LayerNorm up to
    a relative O(1/C), and both saturate at ±sqrt(C - 1) for outliers. The exact identity agrees:
    E[S] = C - 2 for such inputs, so its β is about C(C-2)/(C-1) = C - 1 - 1/(C-1), within O(1)
    of β₀ = C.

    Args:
        dim: channels C.
        affine: learn γ (ones) and b (zeros). μ and β are learned either way: they belong to the
            squashing function, not to the affine.
        bias: learn b.
        eps: accepted for the common norm constructor and unused: β > 0 already keeps the
            denominator away from zero.

    Train and eval are identical. Only γ/b fold into an adjacent Linear.

    Paper: "Elementwise Layer Normalization" (Stollenwerk, arXiv 2503.21708, 2025); there is no
    official code.
    """

    info = NormInfo(
        family="elementwise", stats="none", fold="affine",
        paper="Elementwise Layer Normalization (Stollenwerk, arXiv 2025)",
    )

    def __init__(
        self, dim: int, *, eps: float = 0.0, affine: bool = True, bias: bool = True,
        device=None, dtype=None,
    ) -> None:
        super().__init__(dim, eps=eps, affine=affine)
        self.shift = nn.Parameter(torch.zeros(dim, device=device, dtype=dtype))
        self.log_beta = nn.Parameter(torch.full((), math.log(dim), device=device, dtype=dtype))
        affine_params(self, dim, bias=bias, device=device, dtype=dtype)

    @property
    def beta(self) -> Tensor:
        """β = exp(log_beta), the positive scalar standing in for the other channels."""
        return self.log_beta.exp()

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return eln(x, self.beta, self.shift, self.weight, self.bias)


@register_norm("derf")
class Derf(Norm):
    """Dynamic erf: the error function in place of DyT's tanh, with a learned shift.

        y = γ ⊙ erf(α·x + s) + β,   α and s learnable scalars, γ/β per channel

    erf rises more steeply than tanh near 0 (erf'(0) = 2/√π ≈ 1.13 against 1) and saturates
    faster (its tails decay like exp(−z²)); the paper finds it the best of the point-wise
    functions it searched.

    Args:
        dim: channels C.
        alpha_init: α₀ = 0.5, the official code's default (ViT, DNA and speech models; DiT-XL
            uses 1.0 and the GPT-2 patch sets it per position, as DyT's `alpha_init`).
        shift_init: s₀ = 0, the official default.
        affine: learn γ (ones) and β (zeros). α and s are learned either way, as in the
            official code.
        bias: learn β.
        eps: accepted for the common norm constructor and unused.

    Train and eval are identical. Only γ/β fold into an adjacent Linear. Runs through
    `normlab.kernels.derf` (backend "auto").

    Paper: "Stronger Normalization-Free Transformers" (Chen, Lu, Zhu, Sun, Liu, arXiv
    2512.10938, 2025); official code zlab-princeton/Derf (`Dynamic_erf`: α and s are
    one-element parameters, as here).
    """

    info = NormInfo(
        family="elementwise", stats="none", fold="affine",
        paper="Stronger Normalization-Free Transformers (Chen, Lu, Zhu, Sun, Liu, arXiv 2025)",
        scalars=("alpha", "shift"),
    )

    def __init__(
        self, dim: int, *, alpha_init: float = 0.5, shift_init: float = 0.0, eps: float = 0.0,
        affine: bool = True, bias: bool = True, device=None, dtype=None,
    ) -> None:
        super().__init__(dim, eps=eps, affine=affine)
        for label, value in (("alpha_init", alpha_init), ("shift_init", shift_init)):
            if not math.isfinite(value):
                raise ValueError(f"derf: {label} must be a finite number, got {value!r}")
        self.alpha_init, self.shift_init = float(alpha_init), float(shift_init)
        self.alpha = nn.Parameter(torch.full((), self.alpha_init, device=device, dtype=dtype))
        self.shift = nn.Parameter(torch.full((), self.shift_init, device=device, dtype=dtype))
        affine_params(self, dim, bias=bias, device=device, dtype=dtype)

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return kernels.derf(x, self.alpha, self.shift, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"{self.dim}, alpha_init={self.alpha_init:g}, shift_init={self.shift_init:g}, "
                f"affine={self.affine}")
