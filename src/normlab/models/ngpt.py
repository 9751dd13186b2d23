"""nGPT, the normalized Transformer: every vector on the unit hypersphere (a causal LM).

    model = NGPT(NGPTConfig(depth=4, dim=64, heads=4))
    logits, loss = model(idx, targets, mask)
    proj = UnitNormProjection(model.unit_norm_matrices())     # normlab.weights
    ...; optimizer.step(); proj.project()                    # after every step

No norm layer anywhere: the hidden state h stays unit-norm (Norm(x) = x/‖x‖₂), each sublayer
moves it towards its own normalized output by a learned per-channel step, and the weight
matrices are re-normalized after every optimizer step, so every dot product is a cosine.

    h ← Norm( h + α_A ⊙ (Norm(h_A) − h) ),   h_A = Attn(h)
    h ← Norm( h + α_M ⊙ (Norm(h_M) − h) ),   h_M = MLP(h)
    q, k ← s_qk ⊙ Norm(rope(q)), s_qk ⊙ Norm(rope(k)) per head; softmax(q·kᵀ · √d_h)
    u, v = s_u ⊙ W_u h, s_v ⊙ W_v h · √D;  h_M = W_o (u ⊙ SiLU(v))
    logits = s_z ⊙ (W_head h)

Each learned scale uses the paper's "scaling trick": it is stored at s_init (1/√D for α_A,
α_M, s_qk and s_z; 1 for s_u and s_v) and used as stored · (s_value / s_init), so Adam's steps
act on it as on a unit-scale parameter. Effective values at init: α_A = α_M = 0.05, s_qk = 1,
s_u = s_v = √D (the official code scales u by √D too; the paper writes it for v only, and
since h_M is normalized the scale of u does not change the forward), s_z = 1. |α| is used, as
in the official code. The LM head is untied; there is no final norm and no position table
(RoPE in the model's half-split layout; the official code's interleaved pairs are the same
model up to a fixed permutation of each head's channels, which the normalizations ignore).

Train it as the paper does: no weight decay and no warmup (the bench warns otherwise).

Paper: "nGPT: Normalized Transformer with Representation Learning on the Hypersphere"
(Loshchilov, Hsieh, Sun, Ginsburg, ICLR 2025); official code NVIDIA/ngpt (`model.py`,
`train.py`), whose choices are followed where the paper is silent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normlab.blocks import attention_mask, check_shape
from normlab.blocks.rotary import apply_rotary, check_rotary_head_dim, rotary_cos_sin
from normlab.models.common import count_params
from normlab.models.lm import check_lm_inputs, lm_loss
from normlab.weights.hypersphere import UnitNormProjection, unit_norm


@dataclass
class NGPTConfig:
    """nGPT's shape and the init values of its learned scales.

    Attributes:
        vocab_size, block_size: vocabulary V and the longest sequence T.
        depth, dim, heads: L blocks of width D with H heads (head size D/H, even for RoPE).
        mlp_ratio: u and v each have round(mlp_ratio·D) channels (4 in the paper).
        rope_theta: the rotary base θ.
        alpha_init: the effective init of the eigen learning rates α_A and α_M (0.05).
    """

    vocab_size: int = 256
    block_size: int = 256
    depth: int = 4
    dim: int = 128
    heads: int = 4
    mlp_ratio: float = 4.0
    rope_theta: float = 10_000.0
    alpha_init: float = 0.05

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"NGPTConfig.{name} must be a positive int, got {value!r}")
        try:
            check_shape(self.dim, self.heads, self.mlp_ratio, 0.0)
            check_rotary_head_dim(self.dim // self.heads)
        except ValueError as error:
            raise ValueError(f"NGPTConfig: {error}") from None
        for name in ("rope_theta", "alpha_init"):
            if not getattr(self, name) > 0:
                raise ValueError(f"NGPTConfig.{name} must be > 0, got {getattr(self, name)!r}")

    @property
    def base_scale(self) -> float:
        """1/√D: the stored init of the scales that the scaling trick rescales."""
        return self.dim**-0.5

    @property
    def mlp_hidden(self) -> int:
        return round(self.mlp_ratio * self.dim)


class ScaledVector(nn.Module):
    """A learned vector under the scaling trick: stored at `stored_init`, used as
    stored · (`value_init` / `stored_init`) · `multiplier`."""

    def __init__(self, size: int, value_init: float, stored_init: float,
                 multiplier: float = 1.0) -> None:
        super().__init__()
        self.stored_init, self.factor = stored_init, value_init / stored_init * multiplier
        self.weight = nn.Parameter(torch.full((size,), float(stored_init)))

    def forward(self) -> Tensor:
        return self.weight * self.factor

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.weight.fill_(self.stored_init)


class NGPTBlock(nn.Module):
    """One nGPT block: normalized attention and SwiGLU steps on the hypersphere."""

    def __init__(self, config: NGPTConfig) -> None:
        super().__init__()
        c = config
        d, hidden, base = c.dim, c.mlp_hidden, c.base_scale
        self.heads, self.head_dim, self.rope_theta = c.heads, d // c.heads, c.rope_theta
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            nn.Linear(d, d, bias=False) for _ in range(4)
        )
        self.fc1 = nn.Linear(d, hidden, bias=False)   # u
        self.gate = nn.Linear(d, hidden, bias=False)  # v, through SiLU
        self.fc2 = nn.Linear(hidden, d, bias=False)
        self.alpha_attn = ScaledVector(d, c.alpha_init, base)
        self.alpha_mlp = ScaledVector(d, c.alpha_init, base)
        self.s_qk = ScaledVector(d, 1.0, base)
        self.s_u = ScaledVector(hidden, 1.0, 1.0, math.sqrt(d))
        self.s_v = ScaledVector(hidden, 1.0, 1.0, math.sqrt(d))

    def forward(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        h = self._step(h, self.attention(h, mask), self.alpha_attn)
        u, v = self.s_u() * self.fc1(h), self.s_v() * self.gate(h)
        return self._step(h, self.fc2(u * F.silu(v)), self.alpha_mlp)

    @staticmethod
    def _step(h: Tensor, out: Tensor, alpha: ScaledVector) -> Tensor:
        """Norm(h + |α| ⊙ (Norm(out) − h)), h re-normalized first as the official code does."""
        h = unit_norm(h)
        return unit_norm(h + alpha().abs().to(h.dtype) * (unit_norm(out) - h))

    def attention(self, h: Tensor, mask: Tensor | None) -> Tensor:
        b, t, _ = h.shape
        q, k, v = (p(h).view(b, t, self.heads, -1).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))  # (B, H, T, d)
        cos, sin = rotary_cos_sin(torch.arange(t, device=h.device), self.head_dim,
                                  self.rope_theta, q.dtype)
        s_qk = self.s_qk().view(self.heads, 1, self.head_dim).to(q.dtype)
        q = s_qk * unit_norm(apply_rotary(q, cos, sin))
        k = s_qk * unit_norm(apply_rotary(k, cos, sin))
        allowed = attention_mask(mask, causal=True)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, is_causal=allowed is None,
                                           scale=math.sqrt(self.head_dim))
        return self.out_proj(y.transpose(1, 2).reshape(b, t, -1))

    def scales(self) -> list[ScaledVector]:
        return [self.alpha_attn, self.alpha_mlp, self.s_qk, self.s_u, self.s_v]


class NGPT(nn.Module):
    """The normalized Transformer LM; see `NGPTConfig` and the module docstring."""

    def __init__(self, config: NGPTConfig) -> None:
        super().__init__()
        if not isinstance(config, NGPTConfig):
            raise TypeError(f"NGPT expects an NGPTConfig, got {type(config).__name__}")
        self.config = c = config
        self.wte = nn.Embedding(c.vocab_size, c.dim)
        self.blocks = nn.ModuleList(NGPTBlock(c) for _ in range(c.depth))
        self.lm_head = nn.Linear(c.dim, c.vocab_size, bias=False)
        self.s_z = ScaledVector(c.vocab_size, 1.0, c.base_scale)
        self.init_weights()

    def forward(self, idx: Tensor, targets: Tensor | None = None, mask: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None]:
        """Logits (B, T, V) and, given targets, the mean cross-entropy (the GPT's `mask` and
        -100 rules; padded keys are left out of attention)."""
        check_lm_inputs("NGPT", idx, targets, mask, self.config.block_size)
        h = self.wte(idx)  # unit rows: the hidden state starts on the sphere
        for block in self.blocks:
            h = block(h, mask)
        logits = self.s_z().to(h.dtype) * self.lm_head(h)
        return logits, None if targets is None else lm_loss(logits, targets, mask)

    def unit_norm_matrices(self) -> dict[str, tuple[nn.Parameter, int]]:
        """Every matrix nGPT keeps on the sphere, with the axis of its unit vectors (the
        embedding axis): rows (1) of wte, lm_head, q/k/v and the MLP inputs; columns (0) of
        out_proj and fc2."""
        matrices = {"wte.weight": (self.wte.weight, 1), "lm_head.weight": (self.lm_head.weight, 1)}
        for i, block in enumerate(self.blocks):
            for name in ("q_proj", "k_proj", "v_proj", "fc1", "gate", "out_proj", "fc2"):
                dim = 0 if name in ("out_proj", "fc2") else 1
                matrices[f"blocks.{i}.{name}.weight"] = (getattr(block, name).weight, dim)
        return matrices

    @torch.no_grad()
    def init_weights(self) -> None:
        """N(0, 1/√D) for every matrix (out_proj and fc2 1/√(2L·D), as the official code),
        the scales at their stored init, then every matrix normalized (`unit_norm_matrices`)."""
        c = self.config
        for name, (weight, _) in self.unit_norm_matrices().items():
            out = name.endswith(("out_proj.weight", "fc2.weight"))
            nn.init.normal_(weight, 0.0, c.base_scale / (math.sqrt(2 * c.depth) if out else 1))
        for scale in (self.s_z, *(s for block in self.blocks for s in block.scales())):
            scale.reset_parameters()
        UnitNormProjection(self.unit_norm_matrices()).project()

    def num_params(self) -> int:
        return count_params(self)
