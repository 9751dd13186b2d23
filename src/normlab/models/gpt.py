"""A small GPT (decoder-only causal LM) whose norm and placement are configuration.

    model = GPT(GPTConfig(norm="rmsnorm", placement="lns"))
    logits, loss = model(idx, targets, mask)      # idx, targets: (B, T) int64; mask: (B, T) bool

Token and learned position embeddings, `depth` blocks laid out by the placement scheme
(`normlab.blocks.SCHEMES`), a final norm where the scheme has one, and an LM head (tied to the
token embedding by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from normlab.blocks import Attention, Block, resolve_layout
from normlab.blocks.attention import check_qk_norm, check_qkv_norm, qk_attention
from normlab.blocks.init import init_block, init_embedding, init_linear
from normlab.models.common import StackConfig, count_params
from normlab.models.lm import (
    attach_head,
    check_embed_gain_init,
    check_lm_inputs,
    decode,
    make_embed_gain,
)
from normlab.norms import make_norm


@dataclass
class GPTConfig(StackConfig):
    """The GPT's shape, norm and placement (the shared fields: `StackConfig`).

    Attributes:
        vocab_size, block_size: vocabulary V and the longest sequence T.
        bias: biases in the Linears of the blocks (norms take theirs from `norm_kwargs`).
        tie_embeddings: the LM head shares the token embedding matrix.
        embed_gain_init: if set, a learnable scalar multiplies the token embeddings, starting
            at this value (`models.lm.make_embed_gain`: DyT's LLaMA recipe, √D).
        qk_norm, qk_norm_name: QK-norm, "per_head" or "across_heads" (None = off), with the
            model's norm or the one named (`normlab.blocks.GroupedAttention`, docs/models.md).
    """

    architecture: ClassVar[str] = "decoder"

    vocab_size: int = 256
    block_size: int = 256
    bias: bool = True
    tie_embeddings: bool = True
    embed_gain_init: float | None = None
    qk_norm: Literal["per_head", "across_heads"] | None = None
    qk_norm_name: str | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        check_qk_norm(self.qk_norm, self.qk_norm_name)
        check_embed_gain_init("GPTConfig", self.embed_gain_init)
        super().__post_init__()
        check_qkv_norm(self.qk_norm, self.has_qkv_norm)


class GPT(nn.Module):
    """A decoder-only Transformer LM; see `GPTConfig` and `normlab.blocks.SCHEMES`."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.layout = resolve_layout(
            c.placement, c.depth, architecture="decoder", **c.placement_kwargs
        )
        in_blocks, outside = c.position_kwargs()
        attention = Attention if c.qk_norm is None else qk_attention(
            c.norm, c.norm_kwargs, c.qk_norm, c.qk_norm_name, rope_theta=None
        )
        self.wte = nn.Embedding(c.vocab_size, c.dim)
        self.wpe = nn.Embedding(c.block_size, c.dim)
        self.embed_norm = make_norm(c.norm, c.dim, **outside) if self.layout.embed_norm else None
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            Block(
                c.dim, c.heads, placement, norm=c.norm, sublayer_norm_kwargs=in_blocks,
                mlp_ratio=c.mlp_ratio, causal=True, bias=c.bias, dropout=c.dropout,
                attention=attention,
            )
            for placement in self.layout.blocks
        )
        attach_head(self, c, outside)
        self.embed_scale = math.sqrt(c.dim) if self.layout.scale_embeddings else 1.0
        self.embed_gain = make_embed_gain(c.embed_gain_init)
        self.init_weights()

    def forward(
        self, idx: Tensor, targets: Tensor | None = None, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Logits (B, T, V) and, given targets, the mean cross-entropy over real positions.

        `mask` (B, T) is True on real tokens: padded positions are left out of every
        batch-statistics norm, of attention (as keys) and of the loss. Targets equal to -100
        are ignored as well.
        """
        check_lm_inputs("GPT", idx, targets, mask, self.config.block_size)
        pos = torch.arange(idx.shape[1], device=idx.device)
        tokens = self.wte(idx) * self.embed_scale  # (B, T, D)
        if self.embed_gain is not None:
            tokens = tokens * self.embed_gain
        x = tokens + self.wpe(pos)
        return decode(self, x, targets, mask)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialize the weights as the placement scheme's paper does (`Layout.init`).

        * default (every scheme whose `InitSpec` is the default): every Linear and embedding
          ~ N(0, 0.02), biases 0. LNS uses no scaled init on purpose
          (its authors found it diminishes the effect); Mix-LN's N(0, √(2/5)) embedding init
          is not used, so schemes compare at equal embedding init.
        * rezero / skipinit: their gates α, g = 0, so every block is the identity at init.
          gpas: gates a = 0 (identity at init).
        * deepnorm: xavier_normal(gain=β) for v_proj, out_proj, fc1, fc2 and
          xavier_normal(gain=1) for q_proj, k_proj (the paper's pseudo-code),
          β = (8L)^{-1/4}; embeddings N(0, 0.02).
        * tfixup (decoder-only adaptation, no published constants): Xavier init, then v_proj,
          out_proj, fc1, fc2 and the token embedding (drawn from N(0, D^{-1/2}) and scaled by √D
          in forward) × (9L)^{-1/4}; a tied LM head is scaled with it. No norm anywhere.
        * norms keep their constructor init (γ = 1, β = 0), with the arguments of
          `norm_kwargs_by_position` (e.g. DyT's α₀ by position). An untied LM head gets the
          base Linear init; the learnable embedding gain, if any, starts at `embed_gain_init`.
        """
        spec = self.layout.init
        if self.embed_gain is not None:
            self.embed_gain.fill_(self.config.embed_gain_init)
        init_embedding(self.wte.weight, spec, spec.embed_gain)
        init_embedding(self.wpe.weight, spec)
        for block in self.blocks:
            init_block(block, spec)
        if not self.config.tie_embeddings:
            init_linear(self.lm_head, spec)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters counted once (a tied head is the embedding); `non_embedding` drops wpe."""
        return count_params(self, exclude=[self.wpe.weight] if non_embedding else [])
