"""Rotary position embeddings (RoPE), in the half-split layout of LLaMA and HuggingFace.

For a head vector x ∈ R^d (d even) at position m, channel pairs (x_i, x_{i+d/2}) are rotated by
the angle m·ω_i, with ω_i = θ^{-2i/d}, i = 0 … d/2 − 1:

    rope(x, m) = x ⊙ cos(m·ω̃) + rotate_half(x) ⊙ sin(m·ω̃),   ω̃ = (ω, ω),
    rotate_half(x) = (−x_{d/2:}, x_{:d/2})

Rotations compose, so ⟨rope(q, m), rope(k, n)⟩ depends on m − n only: attention scores see
relative positions. The angles are computed in float32 and cast to the input dtype, as
HuggingFace's Llama does.

Paper: "RoFormer: Enhanced Transformer with Rotary Position Embedding" (Su, Lu, Pan, Murtadha,
Wen, Liu; Neurocomputing 2024, arXiv 2104.09864).
"""

from __future__ import annotations

import torch
from torch import Tensor


def rotary_frequencies(head_dim: int, theta: float, device=None) -> Tensor:
    """ω_i = θ^{-2i/d} for i = 0 … d/2 − 1, float32, shape (d/2,)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    return 1.0 / (theta**exponents)


def rotary_cos_sin(
    positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """cos(m·ω̃), sin(m·ω̃) for integer `positions` (T,), each (T, d), computed in float32."""
    freqs = positions.float()[:, None] * rotary_frequencies(head_dim, theta, positions.device)
    angles = torch.cat((freqs, freqs), dim=-1)  # (T, d)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """(x_{:d/2}, x_{d/2:}) -> (−x_{d/2:}, x_{:d/2}) on the last axis."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """rope(x) = x ⊙ cos + rotate_half(x) ⊙ sin; x (..., T, d), cos and sin (T, d)."""
    return x * cos + rotate_half(x) * sin


def check_rotary_head_dim(head_dim: int) -> None:
    """RoPE rotates channel pairs: the head size must be even (ValueError naming the fix)."""
    if head_dim % 2:
        raise ValueError(
            f"rotary embeddings rotate channel pairs: head size dim/heads = {head_dim} must be "
            "even; change dim or heads"
        )
