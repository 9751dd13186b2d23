"""The largest attention logit of a layer: what grows before attention collapses.

    z_ij = ⟨q_i, k_j⟩ / √d   over the (query, key) pairs a real query may attend to

At high learning rates the logits of some layers grow without bound and softmax turns
one-hot (attention-entropy collapse); QK-norm caps them. Paper: Wortsman et al., "Small-scale
proxies for large-scale Transformer training instabilities" (arXiv 2309.14322, 2023), after
Dehghani et al., "Scaling Vision Transformers to 22 Billion Parameters" (ICML 2023).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from normlab.blocks.block import Attention, attention_mask


def max_attention_logit(q: Tensor, k: Tensor, allowed: Tensor | None) -> float:
    """max z_ij over batch, heads and the allowed pairs; q, k (B, H, T, d) after QK-norm and
    RoPE, `allowed` a bool mask broadcastable to (B, H, T, T) (None: every pair)."""
    logits = q.float() @ k.float().transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, T, T)
    if allowed is not None:
        logits = logits.masked_fill(~allowed, -math.inf)
    return logits.max().item()


@torch.no_grad()
def layer_max_logit(attention: Attention, x: Tensor, mask: Tensor | None = None) -> float:
    """The largest logit `attention` computes on x (B, T, D) with token mask `mask` (B, T)."""
    q, k, _ = attention.qkv(x, mask)
    length = x.shape[1]
    allowed = attention_mask(mask, attention.causal)
    if allowed is None and attention.causal:
        allowed = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
    if mask is not None:  # a padded query attends to itself only so that softmax is defined
        allowed = allowed & mask[:, None, :, None]
    return max_attention_logit(q, k, allowed)
