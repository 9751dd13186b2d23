"""The pure maths of the normalizations: the one source of truth.

Modules own parameters and call these functions; kernels, surgery and the tests are checked
against them. It imports nothing of normlab, so it sits below the kernels and the norms alike
(`normlab.norms.functional` re-exports it under the zoo's name). Conventions:

* `x` has shape (..., D); reductions named "token" are over the last axis.
* Statistics are computed in float32 for float16/bfloat16 inputs (float64 stays float64) and the
  result is returned in the input dtype.
* `weight`/`bias` are optional per-channel tensors of shape (D,).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype statistics are computed in: float32 for half types, else `dtype` itself."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def upcast(x: Tensor) -> Tensor:
    """`x` in its statistics dtype (a no-op for float32/float64)."""
    return x.to(compute_dtype(x.dtype))


def apply_affine(y: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """`y * weight + bias` with either term optional, in y's dtype."""
    if weight is not None:
        y = y * weight.to(y.dtype)
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y


def layer_norm(
    x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5
) -> Tensor:
    """LayerNorm: y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias, over the last axis.

    The variance is the biased one (divide by D), as in Ba et al. 2016 and `torch.nn.LayerNorm`.
    """
    xf = upcast(x)
    mean = xf.mean(-1, keepdim=True)
    centred = xf - mean
    var = centred.square().mean(-1, keepdim=True)
    return apply_affine(centred * torch.rsqrt(var + eps), weight, bias).to(x.dtype)


def rms_norm(
    x: Tensor,
    weight: Tensor | None = None,
    eps: float = 1e-6,
    *,
    partial: int | None = None,
    eps_outside: bool = False,
    bias: Tensor | None = None,
) -> Tensor:
    """RMSNorm: y = x / RMS(x) * weight (+ bias), RMS(x) = sqrt(mean(x_S^2)) over channels S.

    Args:
        partial: if given, S is the first `partial` channels only (pRMSNorm); else all D.
        eps_outside: False (default): 1/sqrt(mean(x^2) + eps), as LLaMA and `torch.nn.RMSNorm`;
            True: 1/(sqrt(mean(x^2)) + eps), as the official RMSNorm code (Zhang & Sennrich 2019).
    """
    xf = upcast(x)
    xs = xf if partial is None else xf[..., :partial]
    mean_square = xs.square().mean(-1, keepdim=True)
    inv = 1.0 / (mean_square.sqrt() + eps) if eps_outside else torch.rsqrt(mean_square + eps)
    return apply_affine(xf * inv, weight, bias).to(x.dtype)


def crms_norm(x: Tensor, weight: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """Compressed RMSNorm of a zero-mean vector stored without its last coordinate.

    x̃ ∈ R^{d-1} stands for the zero-mean x = [x̃, -Σx̃] ∈ R^d, so
        CRMS(x̃) = x̃ / sqrt((Σ x̃_i² + (Σ x̃_i)²) / d + eps),   d = x̃.shape[-1] + 1,
    which equals RMSNorm(x)[:d-1] (Jiang et al., "Pre-RMSNorm and Pre-CRMSNorm Transformers",
    NeurIPS 2023).
    """
    xf = upcast(x)
    d = xf.shape[-1] + 1
    mean_square = (xf.square().sum(-1, keepdim=True) + xf.sum(-1, keepdim=True).square()) / d
    return apply_affine(xf * torch.rsqrt(mean_square + eps), weight, None).to(x.dtype)


def scale_norm(x: Tensor, gain: Tensor | float, eps: float = 1e-5) -> Tensor:
    """ScaleNorm: y = g * x / max(||x||_2, eps) with one scalar gain g (Nguyen & Salazar 2019)."""
    xf = upcast(x)
    norm = torch.linalg.vector_norm(xf, dim=-1, keepdim=True).clamp_min(eps)
    g = gain.to(xf.dtype) if isinstance(gain, Tensor) else gain
    return (g * xf / norm).to(x.dtype)


def dyt(
    x: Tensor, alpha: Tensor | float, weight: Tensor | None = None, bias: Tensor | None = None
) -> Tensor:
    """Dynamic Tanh: y = weight * tanh(alpha * x) + bias, alpha a scalar (Zhu et al. 2025)."""
    xf = upcast(x)
    a = alpha.to(xf.dtype) if isinstance(alpha, Tensor) else alpha
    return apply_affine(torch.tanh(a * xf), weight, bias).to(x.dtype)


def zero_centered_gain(weight: Tensor | None) -> Tensor | None:
    """The gain 1 + w of a zero-centred ("offset") weight w, the 1 added in the statistics dtype.

    Gemma stores w (initialized to 0) and multiplies by 1 + w in float32
    (`transformers`' GemmaRMSNorm; TransformerEngine's `zero_centered_gamma`); adding the 1
    in a half dtype would round small w away. None (no weight) stays None.
    """
    return None if weight is None else 1.0 + upcast(weight)


def derf(
    x: Tensor, alpha: Tensor | float, shift: Tensor | float,
    weight: Tensor | None = None, bias: Tensor | None = None,
) -> Tensor:
    """Dynamic erf: y = weight · erf(alpha · x + shift) + bias, alpha and shift scalars
    (Chen, Lu, Zhu, Sun, Liu, "Stronger Normalization-Free Transformers", arXiv 2512.10938)."""
    xf = upcast(x)
    a = alpha.to(xf.dtype) if isinstance(alpha, Tensor) else alpha
    s = shift.to(xf.dtype) if isinstance(shift, Tensor) else shift
    return apply_affine(torch.erf(a * xf + s), weight, bias).to(x.dtype)


def seed_norm(
    x: Tensor, alpha: Tensor, beta: Tensor, gamma: Tensor, eps: float = 1e-6, heads: int = 1,
) -> Tensor:
    """SeeDNorm: y = [tanh(⟨x_h, β_h⟩)·α + γ] ⊙ x / RMS(x), RMS(x) = sqrt(mean_D(x²) + eps).

    `alpha`, `beta`, `gamma` are (D,); the D channels split into `heads` consecutive heads of
    D/heads channels, and each head h scales its α_h by tanh of its own dot product ⟨x_h, β_h⟩
    (one head: one scalar per token). The dot product reads the un-normalized x, in the
    statistics dtype (Cai, Zhu, Liu, Min, "SeeDNorm: Self-Rescaled Dynamic Normalization",
    arXiv 2510.22777).
    """
    xf = upcast(x)
    d = xf.shape[-1]
    if d % heads:
        raise ValueError(f"seed_norm: heads={heads} must divide the {d} channels of x")
    xh = xf.unflatten(-1, (heads, d // heads))  # (..., H, D/H)
    b = beta.to(xf.dtype).view(heads, d // heads)
    scale = torch.tanh((xh * b).sum(-1, keepdim=True))  # (..., H, 1)
    gain = (scale * alpha.to(xf.dtype).view(heads, d // heads)).flatten(-2) + gamma.to(xf.dtype)
    inv = torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    return (gain * (xf * inv)).to(x.dtype)


def check_group_size(owner: str, dim: int, group_size: object) -> int:
    """`group_size` as an int after checking that it is a positive int dividing `dim`."""
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
        raise ValueError(f"{owner}: group_size must be a positive int, got {group_size!r}")
    if dim % group_size:
        raise ValueError(
            f"{owner}: group_size={group_size} must divide the {dim} channels (one RMS "
            f"statistic per group of group_size consecutive channels)"
        )
    return group_size


def gated_rms_norm(
    x: Tensor, gate: Tensor | None, weight: Tensor | None, group_size: int, eps: float = 1e-5,
    *, norm_before_gate: bool = False,
) -> Tensor:
    """Gated, grouped RMSNorm (Mamba-2, Qwen3-Next):

        norm_before_gate=False:  y = RMSNorm_g(x ⊙ silu(z)) ⊙ w           (Mamba-2)
        norm_before_gate=True:   y = RMSNorm_g(x) ⊙ w ⊙ silu(z)           (Qwen3-Next)

    RMSNorm_g normalizes each group of `group_size` consecutive channels by its own
    sqrt(mean(u²) + eps); `weight` spans all D channels. `gate` z (x's shape) None means no
    gate. Everything is computed in the statistics dtype and cast once at the end, as the
    reference of state-spaces/mamba (`upcast=True`).
    """
    d = x.shape[-1]
    check_group_size("gated_rms_norm", d, group_size)
    xf = upcast(x)
    silu = None if gate is None else torch.nn.functional.silu(upcast(gate))
    if silu is not None and not norm_before_gate:
        xf = xf * silu
    xg = xf.unflatten(-1, (d // group_size, group_size))
    y = (xg * torch.rsqrt(xg.square().mean(-1, keepdim=True) + eps)).flatten(-2)
    y = apply_affine(y, weight, None)
    if silu is not None and norm_before_gate:
        y = y * silu
    return y.to(x.dtype)


def real_tokens(x: Tensor, mask: Tensor | None) -> Tensor:
    """The (N, D) rows of `x` that are real tokens (all rows when `mask` is None)."""
    rows = x.reshape(-1, x.shape[-1])
    return rows if mask is None else rows[mask.reshape(-1)]


def masked_moments(x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, int]:
    """Per-channel mean and biased variance over the real tokens of `x`, and their count.

    Computed in the statistics dtype; padded tokens (mask False) are not counted.
    """
    rows = upcast(real_tokens(x, mask))
    count = rows.shape[0]
    if count == 0:
        raise ValueError("batch statistics need at least one real token; the mask is all False")
    mean = rows.mean(0)
    var = (rows - mean).square().mean(0)
    return mean, var, count


def masked_mean_square(x: Tensor, mask: Tensor | None) -> tuple[Tensor, int]:
    """Per-channel quadratic mean mean(x²) over the real tokens of `x`, and their count."""
    rows = upcast(real_tokens(x, mask))
    if rows.shape[0] == 0:
        raise ValueError("batch statistics need at least one real token; the mask is all False")
    return rows.square().mean(0), rows.shape[0]


def affine_of_moments(
    mean: Tensor | None, var: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor]:
    """(x − mean)/sqrt(var + eps)·weight + bias written as the per-channel map scale·x + shift.

    scale = weight/sqrt(var + eps), shift = bias − mean·scale; `mean` None means no centring,
    `weight`/`bias` None mean 1 and 0. Both (C,) in var's dtype: the eval form of every norm
    whose inference is a frozen per-channel normalization (fold "op").
    """
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight.to(scale.dtype)
    shift = torch.zeros_like(scale) if mean is None else -mean.to(scale.dtype) * scale
    if bias is not None:
        shift = shift + bias.to(shift.dtype)
    return scale, shift


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of `n` that is <= `limit` (used for group counts)."""
    for g in range(min(n, limit), 0, -1):
        if n % g == 0:
            return g
    raise AssertionError("1 divides every positive integer")


def resolve_groups(owner: str, dim: int, groups: int | None, default: int = 32) -> int:
    """The channel-group count a per-token group normalization of `dim` channels uses.

    A token has no spatial axes, so a group of one channel has variance 0 and normalizes to a
    constant (its bias alone). Hence:

    * `groups=None`: the largest divisor of `dim` that is <= min(default, dim // 2), i.e. the
      papers' 32 lowered silently until it divides `dim` and every group has two channels or
      more (a `dim` of 1, or a prime, gets one group).
    * an explicit int: used as given; one that does not divide `dim` is lowered to the largest
      divisor <= it, with a warning; one that leaves a single channel per group warns too.

    `owner` (the norm's name) prefixes the messages. ValueError if `groups` is not a positive int.
    """
    if groups is None:
        return largest_divisor_at_most(dim, max(1, min(default, dim // 2)))
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{owner}: groups must be a positive int, got {groups!r}")
    used = largest_divisor_at_most(dim, groups)
    if used != groups:
        warnings.warn(
            f"{owner}: groups={groups} does not divide dim={dim}; using {used} groups, the "
            f"largest divisor of {dim} that is <= {groups}",
            stacklevel=3,
        )
    if used == dim > 1:
        warnings.warn(
            f"{owner}: groups={used} leaves one channel per group of dim={dim}: each group of a "
            f"token has variance 0 and normalizes to a constant; pass groups <= {dim // 2} "
            f"(or leave groups unset)",
            stacklevel=3,
        )
    return used


def group_moments(x: Tensor, groups: int) -> tuple[Tensor, Tensor, Tensor]:
    """`x` (..., C) viewed as (..., G, C/G) in its statistics dtype, with the mean and the biased
    variance of every group of every token, both (..., G, 1). `groups` must divide C."""
    channels = x.shape[-1]
    if channels % groups:
        raise ValueError(f"groups={groups} must divide the {channels} channels of x")
    xg = upcast(x).unflatten(-1, (groups, channels // groups))
    mean = xg.mean(-1, keepdim=True)
    var = (xg - mean).square().mean(-1, keepdim=True)
    return xg, mean, var


def group_norm(
    x: Tensor, groups: int, weight: Tensor | None = None, bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Per-token GroupNorm: y = (x − mean_g)/sqrt(var_g + eps)·weight + bias, mean_g and the
    biased var_g over the C/G consecutive channels of the channel's group g in the same token.

    `weight`/`bias` are per channel (C,); a per-group affine is passed repeated C/G times.
    Equals `torch.nn.GroupNorm(G, C)` on the (N, C) rows.
    """
    xg, mean, var = group_moments(x, groups)
    y = ((xg - mean) * torch.rsqrt(var + eps)).flatten(-2)
    return apply_affine(y, weight, bias).to(x.dtype)

