"""A Llama-style decoder (causal LM) whose norm and placement are configuration.

    model = Llama(LlamaConfig(norm="rmsnorm", placement="pre", kv_heads=2, qk_norm="per_head"))
    logits, loss = model(idx, targets, mask)      # idx, targets: (B, T) int64; mask: (B, T) bool

The GPT's stack with the LLaMA choices: no position embedding table but rotary embeddings in
attention (θ = `rope_theta`), a SwiGLU MLP of width ≈ 8/3·D, no biases in any Linear,
grouped-query attention (`kv_heads`), optional QK-norm, an untied LM head by default. The
blocks are the same `normlab.blocks.Block` as the GPT's, so every registered norm and every
placement scheme applies. Under `placement="pre"` with `norm="rmsnorm"` it is HuggingFace's
`LlamaForCausalLM` (QK-norm per head: `Qwen3ForCausalLM`; `placement="olmo2"` with QK-norm
across heads: `Olmo2ForCausalLM`), which `normlab.hf` converts to and from exactly.

Papers: "LLaMA: Open and Efficient Foundation Language Models" (Touvron et al., 2023); "Llama 2:
Open Foundation and Fine-Tuned Chat Models" (Touvron et al., 2023) for grouped-query attention.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from normlab.blocks import Block, SwiGLU, resolve_layout
from normlab.blocks.attention import check_kv_heads, check_qk_norm, check_qkv_norm, qk_attention
from normlab.blocks.init import init_block, init_embedding, init_linear
from normlab.blocks.rotary import check_rotary_head_dim
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
class LlamaConfig(StackConfig):
    """The Llama's shape, attention, norm, placement and init (shared fields: `StackConfig`).

    Attributes:
        vocab_size, block_size: vocabulary V and the longest sequence T.
        norm: "rmsnorm" by default (LLaMA's); any registered norm works.
        mlp_ratio, mlp_multiple_of: the SwiGLU width is mlp_ratio·D rounded up to a multiple
            of `mlp_multiple_of` (`mlp_hidden`); 8/3 as LLaMA (whose multiple is 256: 4096 →
            11008).
        kv_heads: key/value heads H_kv dividing `heads` (grouped-query attention); None = heads.
        rope_theta: the rotary base θ (10,000 in LLaMA, 500,000 in Llama 3 and OLMo-2 7B).
        qk_norm: None, "per_head" (Qwen3) or "across_heads" (OLMo-2): queries and keys
            normalized after their projection, before RoPE (`GroupedAttention`).
        qk_norm_name: the QK norms' registry name; None = `norm`. They take `norm_kwargs` when
            they use the model's norm, their own defaults otherwise.
        tie_embeddings: the LM head shares the token embedding matrix (LLaMA: untied).
        init_std: std of the N(0, σ) init of every Linear and the embedding (0.02: GPT-2,
            LLaMA, OLMo-2). Schemes with their own recipe (deepnorm, tfixup) keep it.
        scale_out_proj_by_depth: GPT-2's recipe, attention out_proj and MLP fc2 (W_down) drawn
            with std σ/√(2L); LLaMA does not scale (False).
        embed_scale: a constant multiplier of the token embeddings, or "sqrt_dim" for √D
            (Gemma's); the LM head uses the unscaled matrix.
        embed_gain_init: if set, a learnable scalar multiplies the token embeddings (after
            `embed_scale`), starting at this value (`models.lm.make_embed_gain`: DyT's LLaMA
            recipe, √D).
    """

    architecture: ClassVar[str] = "decoder"

    vocab_size: int = 256
    block_size: int = 256
    norm: str = "rmsnorm"
    mlp_ratio: float = 8 / 3
    mlp_multiple_of: int = 16
    kv_heads: int | None = None
    rope_theta: float = 10_000.0
    qk_norm: Literal["per_head", "across_heads"] | None = None
    qk_norm_name: str | None = None
    tie_embeddings: bool = False
    init_std: float = 0.02
    scale_out_proj_by_depth: bool = False
    embed_scale: float | Literal["sqrt_dim"] = 1.0
    embed_gain_init: float | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "mlp_multiple_of"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"LlamaConfig.{name} must be a positive int, got {value!r}")
        super().__post_init__()
        check_kv_heads(self.heads, self.kv_heads)
        check_rotary_head_dim(self.dim // self.heads)
        if not self.rope_theta > 0:
            raise ValueError(f"LlamaConfig.rope_theta must be > 0, got {self.rope_theta!r}")
        check_qk_norm(self.qk_norm, self.qk_norm_name)
        check_embed_gain_init("LlamaConfig", self.embed_gain_init)
        check_qkv_norm(self.qk_norm, self.has_qkv_norm)
        if not self.init_std > 0:
            raise ValueError(f"LlamaConfig.init_std must be > 0, got {self.init_std!r}")
        if self.embed_scale != "sqrt_dim" and (
            isinstance(self.embed_scale, str | bool) or not self.embed_scale > 0
        ):
            raise ValueError(
                f"LlamaConfig.embed_scale must be a positive number or 'sqrt_dim', got "
                f"{self.embed_scale!r}"
            )

    @property
    def mlp_hidden(self) -> int:
        """The SwiGLU width: mlp_ratio·D rounded up to a multiple of `mlp_multiple_of`.

        A tolerance of 1e-9 keeps binary rounding from moving it (11008/4096·4096 stays 11008).
        """
        multiple = self.mlp_multiple_of
        return multiple * math.ceil(self.mlp_ratio * self.dim / multiple - 1e-9)

    @property
    def embed_multiplier(self) -> float:
        """`embed_scale` as a number (√D for "sqrt_dim")."""
        return math.sqrt(self.dim) if self.embed_scale == "sqrt_dim" else float(self.embed_scale)


class Llama(nn.Module):
    """A Llama-style decoder-only LM; see `LlamaConfig` and `normlab.blocks.SCHEMES`."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = c = config
        self.layout = resolve_layout(
            c.placement, c.depth, architecture="decoder", **c.placement_kwargs
        )
        if c.scale_out_proj_by_depth and self.layout.init.linear != "normal":
            warnings.warn(
                f"scale_out_proj_by_depth is ignored under placement {c.placement!r}, whose "
                "init recipe is its own", stacklevel=2,
            )
        in_blocks, outside = c.position_kwargs()
        attention = qk_attention(
            c.norm, c.norm_kwargs, c.qk_norm, c.qk_norm_name, kv_heads=c.kv_heads,
            rope_theta=c.rope_theta,
        )
        self.wte = nn.Embedding(c.vocab_size, c.dim)
        self.embed_norm = make_norm(c.norm, c.dim, **outside) if self.layout.embed_norm else None
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            Block(
                c.dim, c.heads, placement, norm=c.norm, sublayer_norm_kwargs=in_blocks,
                mlp_ratio=c.mlp_hidden / c.dim, causal=True,
                bias=False, dropout=c.dropout, attention=attention, mlp=SwiGLU,
            )
            for placement in self.layout.blocks
        )
        attach_head(self, c, outside)
        self.embed_scale = c.embed_multiplier * (
            math.sqrt(c.dim) if self.layout.scale_embeddings else 1.0
        )
        self.embed_gain = make_embed_gain(c.embed_gain_init)
        self.init_weights()

    def forward(
        self, idx: Tensor, targets: Tensor | None = None, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Logits and loss as `GPT.forward` (the same `mask` and -100 rules); rotary positions
        are 0 … T−1 whatever the padding."""
        check_lm_inputs("Llama", idx, targets, mask, self.config.block_size)
        tokens = self.wte(idx) * self.embed_scale  # (B, T, D)
        if self.embed_gain is not None:
            tokens = tokens * self.embed_gain
        return decode(self, tokens, targets, mask)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialize the weights: the scheme's recipe (`Layout.init`) at std `init_std`.

        * normal-init schemes: every Linear (the SwiGLU gate included) and the token
          embedding ~ N(0, init_std); with `scale_out_proj_by_depth`, out_proj and fc2
          (W_down) ~ N(0, init_std/√(2L)) (GPT-2). LLaMA's own init is the default:
          N(0, 0.02) everywhere, no depth scaling.
        * deepnorm / tfixup: their Xavier recipes, the gate scaled as fc1 (an FFN input
          weight): DeepNorm's β, T-Fixup's (9L)^{-1/4}.
        * gates, head scales: their `Gate.init` / 1; norms (QK norms included) keep their
          constructor init. An untied LM head gets the base Linear init; the learnable
          embedding gain, if any, starts at `embed_gain_init`.
        """
        c = self.config
        base = self.layout.init
        spec = dataclasses.replace(
            base, std=c.init_std, embed_std=None if base.embed_std is None else c.init_std
        )
        if self.embed_gain is not None:
            self.embed_gain.fill_(c.embed_gain_init)
        init_embedding(self.wte.weight, spec, spec.embed_gain)
        out_std = spec.std / math.sqrt(2 * c.depth) if c.scale_out_proj_by_depth else None
        for block in self.blocks:
            init_block(block, spec)
            init_linear(block.mlp.gate, spec, spec.branch_gain)
            if out_std is not None:
                for linear in (block.attn.out_proj, block.mlp.fc2):
                    init_linear(linear, spec, spec.branch_gain, std=out_std)
        if not c.tie_embeddings:
            init_linear(self.lm_head, spec)

    def num_params(self) -> int:
        """Parameters counted once (a tied head is the embedding)."""
        return count_params(self)
