"""What depth does at init, measured: finiteness, gradient spread, residual-variance growth."""

from __future__ import annotations

import pytest
import torch

from normlab.blocks import SCHEMES
from normlab.models import GPT, GPTConfig, ViT, ViTConfig
from normlab.norms import list_norms


def random_batch(vocab: int, b: int = 4, t: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    idx, targets = (torch.randint(0, vocab, (b, t), generator=gen) for _ in range(2))
    return idx, targets


NORMS = [n for n in ("layernorm", "rmsnorm", "dyt") if n in list_norms()]
DEEP = [
    pytest.param(s, n, marks=() if n == NORMS[0] else pytest.mark.slow)
    for s in SCHEMES for n in NORMS
]


@pytest.mark.parametrize(("scheme", "norm"), DEEP)
def test_depth_48_is_finite_forward_and_backward(scheme, norm):
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=32, block_size=8, depth=48, dim=16, heads=2, norm=norm,
                        placement=scheme))
    idx, targets = random_batch(32, 2, 8)
    logits, loss = gpt(idx, targets)
    loss.backward()
    assert torch.isfinite(logits).all() and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in gpt.parameters() if p.grad is not None)
    vit = ViT(ViTConfig(depth=48, dim=16, heads=2, norm=norm, placement=scheme, image_size=4))
    logits, loss = vit(torch.randn(2, 1, 4, 4), torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in vit.parameters() if p.grad is not None)


def block_gradient_norms(scheme: str, depth: int, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, depth=depth, dim=32, heads=4,
                          placement=scheme))
    _, loss = model(*random_batch(64, seed=seed))
    loss.backward()
    return torch.stack([
        torch.sqrt(sum(p.grad.square().sum() for p in block.parameters()))
        for block in model.blocks
    ])


def test_deep_post_ln_spreads_gradients_across_layers_more_than_pre_ln():
    """max/min of the per-block gradient norm, 16 blocks: Post-LN's is larger (Xiong et al.)."""
    for seed in (0, 1):
        post = block_gradient_norms("post", 16, seed)
        pre = block_gradient_norms("pre", 16, seed)
        spread_post = (post.max() / post.min()).item()
        spread_pre = (pre.max() / pre.min()).item()
        assert spread_post > 2 * spread_pre, (spread_post, spread_pre)


def residual_variances(scheme: str, depth: int, seed: int) -> list[float]:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, depth=depth, dim=64, heads=4,
                          placement=scheme))
    variances: list[float] = []
    for block in model.blocks:
        block.register_forward_hook(lambda m, args, out: variances.append(out.var().item()))
    with torch.no_grad():
        model(random_batch(64, 8, seed=seed)[0])
    return variances


def test_residual_variance_grows_with_depth_under_pre_and_much_slower_under_lns():
    """Var of the stream after each of 16 blocks at init on random tokens (Curse of Depth)."""
    for seed in (0, 1):
        pre = residual_variances("pre", 16, seed)
        lns = residual_variances("lns", 16, seed)
        growth_pre, growth_lns = pre[-1] / pre[0], lns[-1] / lns[0]
        assert growth_pre > 4, pre
        assert all(b > a for a, b in zip(pre[::4], pre[4::4], strict=False)), pre
        assert growth_lns < growth_pre / 2, (growth_lns, growth_pre)
        # the blocks' increments shrink like 1/ℓ under LNS: the last quarter adds little
        assert (lns[-1] - lns[11]) < 0.5 * (pre[-1] - pre[11])
