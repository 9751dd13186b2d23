"""Symmetric fake quantization: round to a b-bit integer grid and back, in floating point.

    q_max = 2^(b−1) − 1                       (127 for int8, 7 for int4)
    Δ     = max|x| / q_max                    over the group the scale is shared by
    Q(x)  = Δ · clamp(round(x / Δ), −q_max, q_max)

Symmetric with a restricted range (−q_max … q_max, no −2^(b−1)), zero point 0, round half to
even (`torch.round`), scales from the tensor itself (min-max, no clipping search). The groups:

    "tensor":  one Δ for the whole tensor
    "channel": one Δ per channel along `axis` (a weight's output rows; for an activation, its
               input channels: not realizable in an integer GEMM, where the scale of the
               reduction axis cannot be factored out, but the bound migration aims at)
    "token":   one Δ per token, i.e. per row of the (..., C) activation (SmoothQuant's per-token
               dynamic quantization)

This is the arithmetic of `torch.fake_quantize_per_tensor_affine` / `_per_channel_affine` (the
ops behind torch.ao's `FakeQuantize`) with `quant_min = −q_max`, `quant_max = q_max`, zero point
0; those kernels multiply by a float32 reciprocal of Δ, so they may round an exact tie the other
way. Here Δ and x/Δ are computed in float32 at least (float64 stays float64), the result is cast
back to x's dtype. An all-zero group gets Δ = 1 (it stays zero).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Granularity = Literal["tensor", "channel", "token"]
BITS = (2, 3, 4, 5, 6, 7, 8)
GRANULARITIES = ("tensor", "channel", "token")


def check_bits(bits: int) -> int:
    """`bits` if it is a supported width, else ValueError naming the supported ones."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in BITS:
        raise ValueError(f"bit width must be one of {', '.join(map(str, BITS))}, got {bits!r}")
    return bits


def qmax(bits: int) -> int:
    """The largest integer of the symmetric b-bit grid: 2^(b−1) − 1."""
    return 2 ** (check_bits(bits) - 1) - 1


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def absmax(x: Tensor, granularity: Granularity, axis: int = 0) -> Tensor:
    """max|x| over each group, shaped to broadcast against x (see the module docstring)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    a = x.detach().to(_compute_dtype(x)).abs()
    if granularity == "tensor":
        return a.amax()
    if granularity == "token":
        return a.amax(-1, keepdim=True)
    axis = axis % x.dim()
    dims = [d for d in range(x.dim()) if d != axis]
    return a.amax(dim=dims, keepdim=True) if dims else a


def scale_from_absmax(amax: Tensor, bits: int) -> Tensor:
    """Δ = max|x| / q_max, with Δ = 1 where max|x| = 0."""
    step = amax / qmax(bits)
    return torch.where(step > 0, step, torch.ones_like(step))


def fake_quant(x: Tensor, bits: int, granularity: Granularity = "tensor",
               axis: int = 0) -> Tensor:
    """Q(x) of the module docstring (`axis`: the channel axis for "channel")."""
    q = qmax(bits)
    step = scale_from_absmax(absmax(x, granularity, axis), bits)
    xc = x.to(_compute_dtype(x))
    step = step.to(xc.dtype)
    return (torch.round(xc / step).clamp(-q, q) * step).to(x.dtype)


@dataclass(frozen=True)
class QuantSpec:
    """What to quantize in each Linear: weight bits/granularity, activation bits/granularity.

    `w_bits` / `a_bits` None leaves that side in floating point. Weights are quantized per
    tensor or per output channel ("channel"); activations (the Linear's input) per tensor, per
    token or per input channel, dynamically (Δ from the activation being quantized).
    """

    w_bits: int | None = 8
    a_bits: int | None = 8
    w_granularity: Granularity = "channel"
    a_granularity: Granularity = "tensor"

    def __post_init__(self) -> None:
        for bits in (self.w_bits, self.a_bits):
            if bits is not None:
                check_bits(bits)
        if self.w_granularity not in ("tensor", "channel"):
            raise ValueError(f"weight granularity must be 'tensor' or 'channel', got "
                             f"{self.w_granularity!r}")
        if self.a_granularity not in GRANULARITIES:
            raise ValueError(f"activation granularity must be one of {GRANULARITIES}, got "
                             f"{self.a_granularity!r}")

    @classmethod
    def parse(cls, text: str, w_granularity: Granularity = "channel",
              a_granularity: Granularity = "tensor") -> QuantSpec:
        """"W8A8", "w4a8", "W8" (weights only), "A8" (activations only)."""
        match = re.fullmatch(r"(?:w(\d+))?(?:a(\d+))?", text.strip().lower())
        if not match or not any(match.groups()):
            raise ValueError(f"quantization spec must look like W8A8, W4A8, W8 or A8, got {text!r}")
        w, a = (int(g) if g else None for g in match.groups())
        return cls(w, a, w_granularity, a_granularity)

    @property
    def label(self) -> str:
        w = f"W{self.w_bits}" if self.w_bits else ""
        a = f"A{self.a_bits}" if self.a_bits else ""
        gran = f"w:{self.w_granularity}" if self.w_bits else ""
        gran += (", " if gran and self.a_bits else "") + (
            f"a:{self.a_granularity}" if self.a_bits else "")
        return f"{w}{a} ({gran})"
