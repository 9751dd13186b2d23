"""Attention with grouped-query heads, QK-norm and rotary position embeddings (each optional).

    attn = GroupedAttention(64, 8, causal=True, kv_heads=2, rope_theta=1e4, qk_norm="per_head")

A drop-in for `Attention` (same Linears `q_proj`, `k_proj`, `v_proj`, `out_proj`, the same
masking, dropout and NormFormer head scale); `Block(..., attention=partial(GroupedAttention,
...))` builds it in every placement scheme.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from normlab.blocks.block import Attention, per_head_norm
from normlab.blocks.rotary import apply_rotary, check_rotary_head_dim, rotary_cos_sin
from normlab.norms import Norm, get_norm_class, make_norm

QKNorm = Literal["per_head", "across_heads"]
QK_NORMS: tuple[str, ...] = get_args(QKNorm)


def check_qk_norm(qk_norm: str | None, qk_norm_name: str | None = None) -> None:
    """ValueError naming the choices unless `qk_norm` is None, "per_head" or "across_heads",
    and `qk_norm_name` None or a registered norm."""
    if qk_norm is not None and qk_norm not in QK_NORMS:
        raise ValueError(f"qk_norm must be None, 'per_head' or 'across_heads', got {qk_norm!r}")
    if qk_norm_name is not None:
        get_norm_class(qk_norm_name)  # ValueError listing the known norms


def check_qkv_norm(qk_norm: str | None, qkv_norm: bool) -> None:
    """ValueError unless at most one of the model's QK-norm and the placement's QKV-norm is on
    (both would normalize the queries and keys twice)."""
    if qk_norm is not None and qkv_norm:
        raise ValueError(
            f"qk_norm={qk_norm!r} and a placement with QKV-norm (hybridnorm) both normalize the "
            "queries and keys; set qk_norm to None, the placement normalizes q, k and v per head"
        )


def qk_attention(
    norm: str, norm_kwargs: Mapping[str, Any], qk_norm: QKNorm | None,
    qk_norm_name: str | None = None, **options: Any,
) -> partial:
    """A `Block` attention factory: `GroupedAttention` whose QK norms are the model's norm
    with its `norm_kwargs`, or `qk_norm_name` with that norm's defaults; `options` are
    `GroupedAttention`'s (kv_heads, rope_theta)."""
    name = qk_norm_name or norm
    kwargs = dict(norm_kwargs) if name.lower() == norm.lower() else {}
    return partial(
        GroupedAttention, qk_norm=qk_norm, qk_norm_name=name, qk_norm_kwargs=kwargs, **options
    )


def check_kv_heads(heads: int, kv_heads: int | None) -> int:
    """The number of key/value heads: `heads` when None; it must divide `heads`."""
    if kv_heads is None:
        return heads
    if not isinstance(kv_heads, int) or isinstance(kv_heads, bool) or kv_heads < 1:
        raise ValueError(f"kv_heads must be a positive int or None, got {kv_heads!r}")
    if heads % kv_heads:
        raise ValueError(
            f"kv_heads={kv_heads} must divide heads={heads} (each key/value head serves "
            f"heads/kv_heads query heads)"
        )
    return kv_heads


class GroupedAttention(Attention):
    """Multi-head attention with H_kv ≤ H key/value heads, optional QK-norm and RoPE.

        q = W_q x,  k = W_k x,  v = W_v x              (H·d, H_kv·d, H_kv·d channels, d = D/H)
        q, k ← N_q(q), N_k(k)                          QK-norm (optional), before RoPE
        q, k ← rope(q), rope(k)                        (optional, `normlab.blocks.rotary`)
        y = W_O · concat_h softmax(q_h k_{g(h)}ᵀ / √d + mask) v_{g(h)},  g(h) = ⌊h·H_kv/H⌋

    QK-norm, with N any registered norm:
        "per_head"      N over each head's d channels, one weight of shape (d,) shared by all
                        heads (Qwen3, Gemma 3);
        "across_heads"  N over the flat projection, one statistic per token covering all
                        heads, weights of shape (H·d,) for q and (H_kv·d,) for k (OLMo-2).
    The values are normalized only under a QKV-norm placement (HybridNorm: `qkv_norm`, per
    head like "per_head", the values too). Query head h uses key/value head ⌊h·H_kv/H⌋ (HF's
    `repeat_kv`).

    Papers: grouped-query attention, "GQA: Training Generalized Multi-Query Transformer Models
    from Multi-Head Checkpoints" (Ainslie et al., EMNLP 2023); QK-norm, "Scaling Vision
    Transformers to 22 Billion Parameters" (Dehghani et al., ICML 2023), per head as Qwen3
    ("Qwen3 Technical Report", 2025), across heads as "2 OLMo 2 Furious" (OLMo et al., 2024).

    Args:
        dim, heads, causal, bias, dropout, head_scale, qkv_norm: as `Attention`; `qkv_norm`
            excludes `qk_norm`.
        kv_heads: H_kv, dividing H; None = H (multi-head attention).
        rope_theta: RoPE's base θ; None = no rotary embedding.
        qk_norm: None, "per_head" or "across_heads".
        qk_norm_name, qk_norm_kwargs: the QK norms' registry name and arguments.
    """

    def __init__(
        self, dim: int, heads: int, *, causal: bool, bias: bool = False, dropout: float = 0.0,
        head_scale: bool = False, kv_heads: int | None = None, rope_theta: float | None = 1e4,
        qk_norm: QKNorm | None = None, qk_norm_name: Any = "rmsnorm",
        qk_norm_kwargs: Mapping[str, Any] | None = None,
        qkv_norm: Callable[[int], Norm] | None = None,
    ) -> None:
        check_qk_norm(qk_norm)
        check_qkv_norm(qk_norm, qkv_norm is not None)
        super().__init__(
            dim, heads, causal=causal, bias=bias, dropout=dropout, head_scale=head_scale,
            qkv_norm=qkv_norm,
        )
        self.kv_heads = check_kv_heads(heads, kv_heads)
        self.head_dim = dim // heads
        if rope_theta is not None:
            check_rotary_head_dim(self.head_dim)
            if not rope_theta > 0:
                raise ValueError(f"rope_theta must be > 0, got {rope_theta!r}")
        self.rope_theta = None if rope_theta is None else float(rope_theta)
        self.qk_norm = "per_head" if qkv_norm is not None else qk_norm
        kv_width = self.kv_heads * self.head_dim
        self.k_proj = nn.Linear(dim, kv_width, bias=bias)
        self.v_proj = nn.Linear(dim, kv_width, bias=bias)
        if qk_norm is not None:
            kwargs = dict(qk_norm_kwargs or {})
            per_head = qk_norm == "per_head"
            self.q_norm = make_norm(qk_norm_name, self.head_dim if per_head else dim, **kwargs)
            self.k_norm = make_norm(
                qk_norm_name, self.head_dim if per_head else kv_width, **kwargs
            )

    def qkv(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values, each (B, H, T, d): keys and values repeated per group."""
        b, t, _ = x.shape
        q, k, v = (p(x).view(b, t, -1, self.head_dim) for p in self.projections)  # (B, T, n, d)
        if self.q_norm is not None:
            q, k = self._normalize(self.q_norm, q, mask), self._normalize(self.k_norm, k, mask)
        if self.v_norm is not None:
            v = per_head_norm(self.v_norm, v, mask)
        q, k, v = (y.transpose(1, 2) for y in (q, k, v))  # (B, n, T, d)
        if self.rope_theta is not None:
            positions = torch.arange(t, device=x.device)
            cos, sin = rotary_cos_sin(positions, self.head_dim, self.rope_theta, q.dtype)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        groups = self.heads // self.kv_heads
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        return q, k, v

    def _normalize(self, norm: Norm, y: Tensor, mask: Tensor | None) -> Tensor:
        """QK-norm of y (B, T, n, d): over d per head, or over the flat n·d across heads."""
        if self.qk_norm == "per_head":
            return per_head_norm(norm, y, mask)
        return norm(y.flatten(2), mask).view(y.shape)
