"""Every scheme × (layernorm, rmsnorm, dyt) trains: both models overfit one tiny batch.

The full matrix runs by default (about 90 s on one core): the claim is that every scheme
trains with every one of these norms, so every pair is tested.
"""

from __future__ import annotations

import pytest
import torch

from normlab.blocks import SCHEMES, resolve_layout
from normlab.models import GPT, GPTConfig, ViT, ViTConfig
from normlab.norms import list_norms

NORMS = [n for n in ("layernorm", "rmsnorm", "dyt") if n in list_norms()]
# Adam steps and learning rates: post-DyT learns slowly at 3e-3 (the GPT barely moves, the ViT
# ends near half its first loss), the norm-free ViT (tfixup) spikes at 1e-2.
STEPS, GPT_LR, VIT_LR = 120, 1e-2, 5e-3


def has_norms(scheme: str) -> bool:
    layout = resolve_layout(scheme, 2)
    return layout.final_norm or layout.embed_norm or any(p.attn or p.mlp for p in layout.blocks)


MATRIX = [(s, n) for s in SCHEMES for n in (NORMS if has_norms(s) else NORMS[:1])]


# The end of a run is judged by its mean loss over the last steps: at these learning rates a
# scheme may spike once near the end (post-DyT does, at a step that moves with the last bits of
# the norm's rounding) and still have fitted the batch.
LAST_STEPS = 20


def overfit(model: torch.nn.Module, lr: float, *batch: torch.Tensor,
            after_step=None) -> tuple[float, float]:
    """(first loss, mean loss of the last LAST_STEPS) of Adam steps on one fixed batch;
    `after_step()` runs after each step (nGPT's projection)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(STEPS):
        _, loss = model(*batch)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step()
    return losses[0], sum(losses[-LAST_STEPS:]) / LAST_STEPS


@pytest.mark.parametrize(("scheme", "norm"), MATRIX)
def test_gpt_overfits_a_tiny_batch(scheme, norm):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, block_size=16, depth=2, dim=32, heads=4, norm=norm,
                          placement=scheme))
    gen = torch.Generator().manual_seed(1)
    idx, targets = (torch.randint(0, 32, (4, 16), generator=gen) for _ in range(2))
    first, end = overfit(model, GPT_LR, idx, targets)
    assert end < 0.5 * first, (first, end)


# Mean pooling: at N(0, 0.02) a class token is tiny, and with DyT (no rescaling) the classifier
# would start from near-zero features; the class-token path is trained in its own test.
def tiny_images() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(8, 1, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen)


@pytest.mark.parametrize(("scheme", "norm"), MATRIX)
def test_vit_overfits_a_tiny_batch(scheme, norm):
    torch.manual_seed(0)
    model = ViT(ViTConfig(depth=2, dim=32, heads=4, norm=norm, placement=scheme, pool="mean"))
    first, end = overfit(model, VIT_LR, *tiny_images())
    assert end < 0.5 * first, (first, end)


def test_vit_with_a_class_token_overfits():
    torch.manual_seed(0)
    model = ViT(ViTConfig(depth=2, dim=32, heads=4, pool="cls"))
    first, end = overfit(model, VIT_LR, *tiny_images())
    assert end < 0.5 * first, (first, end)
