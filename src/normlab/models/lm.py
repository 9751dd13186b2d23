"""What the causal language models (GPT, Llama) share: input checks, the stack above the
embeddings, and the loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normlab.blocks.hyper import run_stack
from normlab.models.common import apply_norm
from normlab.norms import make_norm

IGNORE_INDEX = -100


def check_lm_inputs(
    model: str, idx: Tensor, targets: Tensor | None, mask: Tensor | None, block_size: int
) -> None:
    """ValueError naming the fix unless idx (B, T) int64 with T ≤ block_size, and targets
    (int64) and mask (bool) shaped like idx. `model` names the model class in the message."""
    if not isinstance(idx, Tensor) or idx.dim() != 2 or idx.dtype != torch.long:
        got = f"{tuple(idx.shape)} {idx.dtype}" if isinstance(idx, Tensor) else type(idx)
        raise ValueError(f"{model}: idx must be an int64 tensor of shape (B, T), got {got}")
    if idx.shape[1] > block_size:
        raise ValueError(
            f"{model}: sequence length {idx.shape[1]} exceeds block_size={block_size}; crop "
            f"the input or raise {model}Config.block_size"
        )
    for name, t, dtype in (("targets", targets, torch.long), ("mask", mask, torch.bool)):
        if t is not None and (t.shape != idx.shape or t.dtype != dtype):
            raise ValueError(
                f"{model}: {name} must be a {dtype} tensor of shape {tuple(idx.shape)} (as idx), "
                f"got {t.dtype} {tuple(t.shape)}"
            )


def check_embed_gain_init(config: str, value: float | None) -> None:
    """ValueError unless `value` (the embedding gain's start) is None or a positive number."""
    if value is not None and (isinstance(value, bool) or not value > 0):
        raise ValueError(f"{config}.embed_gain_init must be > 0 or None, got {value!r}")


def make_embed_gain(value: float | None) -> nn.Parameter | None:
    """The learnable scalar on the token embeddings that starts at `value` (None: no gain).

    DyT's LLaMA recipe (Zhu et al., "Transformers without Normalization", CVPR 2025) starts it
    at √D, because an elementwise norm cannot rescale an N(0, 0.02) stream into tanh's active
    range; at small widths √D·0.02 is still far below 1 (D = 64: 0.16).
    """
    return None if value is None else nn.Parameter(torch.tensor(float(value)))


def lm_loss(logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean next-token cross-entropy (in fp32) over the positions where `mask` is True and the
    target is not -100; logits (B, T, V), targets (B, T)."""
    if mask is not None:
        targets = targets.masked_fill(~mask, IGNORE_INDEX)
    return F.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX
    )


def z_loss(logits: Tensor) -> Tensor:
    """PaLM's auxiliary loss on the softmax normalizer: mean over positions of (log Z)², with
    log Z = logsumexp of the logits (..., V), in fp32. Weighted by 1e-4 in PaLM and in Wortsman
    et al. 2023, it keeps log Z near 0 and so stops the output logits from drifting ("Small-scale
    proxies for large-scale Transformer training instabilities", arXiv 2309.14322)."""
    return torch.logsumexp(logits.float(), dim=-1).square().mean()


def attach_head(model: nn.Module, config, outside_norm_kwargs: dict) -> None:
    """Give a decoder LM its final norm (where the scheme has one) and its bias-free LM head,
    tied to the token embedding `model.wte` when `config.tie_embeddings`."""
    c = config
    model.final_norm = (make_norm(c.norm, c.dim, **outside_norm_kwargs)
                        if model.layout.final_norm else None)
    model.lm_head = nn.Linear(c.dim, c.vocab_size, bias=False)
    if c.tie_embeddings:
        model.lm_head.weight = model.wte.weight


def decode(model: nn.Module, x: Tensor, targets: Tensor | None, mask: Tensor | None
           ) -> tuple[Tensor, Tensor | None]:
    """From the embedded tokens x (B, T, D) to (logits (B, T, V), loss or None): the optional
    embedding norm and dropout, every block (on n streams under hyper-connections, summed
    after the last), the final norm where the scheme has one, the LM
    head, and `lm_loss` given targets. `model` holds `embed_norm`, `drop`, `blocks`,
    `final_norm` and `lm_head`."""
    x = model.drop(apply_norm(model.embed_norm, x, mask))
    x = run_stack(model.blocks, x, mask, model.layout.streams)
    logits = model.lm_head(apply_norm(model.final_norm, x, mask))  # (B, T, V)
    return logits, None if targets is None else lm_loss(logits, targets, mask)

