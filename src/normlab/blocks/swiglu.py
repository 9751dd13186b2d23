"""The SwiGLU feed-forward sublayer of LLaMA-style Transformers."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from normlab.norms import Norm


class SwiGLU(nn.Module):
    """y = fc2( N( SiLU(gate(x)) ⊙ fc1(x) ) ), N the optional "hidden" norm (NormFormer).

    `fc1` is the up (value) projection W_up, `gate` the gate projection W_gate, `fc2` the down
    projection W_down (HF's up_proj, gate_proj, down_proj), each D ↔ D_ff. Same call as `MLP`:
    `SwiGLU(dim, hidden, bias=..., norm=...)`, `forward(x, mask)`.

    Paper: "GLU Variants Improve Transformer" (Shazeer, 2020); used by LLaMA ("LLaMA: Open and
    Efficient Foundation Language Models", Touvron et al., 2023) with D_ff ≈ 8/3·D.
    """

    def __init__(self, dim: int, hidden: int, *, bias: bool = False, norm: Norm | None = None):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=bias)
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.norm = norm
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h = F.silu(self.gate(x)) * self.fc1(x)
        if self.norm is not None:
            h = self.norm(h, mask)
        return self.fc2(h)
