"""norm_only: what stays trainable, the share it reports, that training leaves every frozen
parameter bit-identical, and its refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from normlab import make_norm
from normlab.adapt import norm_only, norm_parameters, parse_include
from normlab.models import GPT, GPTConfig, ViT, ViTConfig


def gpt(tie=False):
    torch.manual_seed(0)
    return GPT(GPTConfig(depth=2, dim=32, heads=2, vocab_size=64, block_size=16,
                         tie_embeddings=tie))


def test_norms_part_is_exactly_the_parameters_of_the_norm_layers():
    model = gpt()
    share = norm_only(model)
    expected = {f"{name}.{p}" for name, m in model.named_modules()
                if isinstance(m, nn.Module) and type(m).__name__ == "LayerNorm"
                for p, _ in m.named_parameters()}
    assert set(share.names) == expected and expected
    assert all(p.requires_grad == (n in expected) for n, p in model.named_parameters())
    assert share.trainable == sum(p.numel() for n, p in model.named_parameters() if n in expected)
    assert share.total == sum(p.numel() for p in model.parameters())
    assert share.share == pytest.approx(share.trainable / share.total)
    assert f"{share.trainable:,} of {share.total:,}" in str(share)


def test_head_and_biases_parts():
    model = gpt()
    head = norm_only(model, "head")
    assert set(head.names) == {"lm_head.weight"}
    both = norm_only(model, ("norms", "biases"))
    assert {n for n in both.names if n.endswith("bias")} == \
        {n for n, _ in model.named_parameters() if n.endswith("bias")}
    vit = ViT(ViTConfig(depth=1, dim=16, heads=2, image_size=8, patch_size=4, num_classes=3))
    assert set(norm_only(vit, "norms+head").names) >= {"head.weight", "head.bias"}


def test_tied_head_counts_the_shared_embedding_once():
    model = gpt(tie=True)
    share = norm_only(model, "head")
    assert share.trainable == model.lm_head.weight.numel()
    assert model.wte.weight.requires_grad


def test_training_leaves_every_frozen_parameter_bit_identical():
    model = gpt()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    share = norm_only(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2,
                            weight_decay=0.1)
    idx = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        _, loss = model(idx, idx)
        loss.backward()
        opt.step()
        opt.zero_grad()
    for name, p in model.named_parameters():
        if name in share.names:
            assert not torch.equal(p, before[name]), name
        else:
            assert torch.equal(p, before[name]), name


def test_refusals():
    with pytest.raises(ValueError, match="no normalization layer"):
        norm_only(nn.Sequential(nn.Linear(3, 3)))
    plain = nn.Sequential(nn.Linear(3, 4), make_norm("layernorm", 4, affine=False))
    with pytest.raises(ValueError, match="no affine parameters"):
        norm_parameters(plain)
    with pytest.raises(ValueError, match="unknown or no part"):
        parse_include("norms+everything")
    with pytest.raises(ValueError, match="no classifier head"):
        norm_only(plain, "head")
    with pytest.raises(ValueError, match="no bias"):
        norm_only(nn.Sequential(nn.Linear(3, 3, bias=False)), "biases")
