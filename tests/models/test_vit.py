"""The ViT: interface, patches, pooling, Dual PatchNorm, schemes' model-level parts, init."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tests.models.test_gpt import inner_norms

from normlab.blocks import SCHEMES
from normlab.models import ViT, ViTConfig
from normlab.models.vit import patchify
from normlab.norms import Norm

TINY = dict(depth=2, dim=32, heads=4)


def vit(**overrides) -> ViT:
    torch.manual_seed(0)
    return ViT(ViTConfig(**{**TINY, **overrides}))


def images(b=3, c=1, size=8, seed=1):
    return torch.randn(b, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_default_config_is_the_documented_one():
    c = ViTConfig()
    assert (c.image_size, c.patch_size, c.channels, c.num_classes) == (8, 2, 1, 10)
    assert (c.depth, c.dim, c.heads, c.mlp_ratio, c.norm, c.placement) == (
        4, 64, 4, 4.0, "layernorm", "pre"
    )
    assert (c.dual_patchnorm, c.pool, c.dropout, c.norm_kwargs, c.placement_kwargs) == (
        False, "cls", 0.0, {}, {}
    )


def test_patchify_matches_a_loop():
    x = images(2, 3, 6)
    p = 3
    patches = patchify(x, p)
    assert patches.shape == (2, 4, p * p * 3)
    for i in range(2):
        for j in range(2):
            block = x[:, :, i * p:(i + 1) * p, j * p:(j + 1) * p]  # (B, C, P, P)
            flat = block.permute(0, 2, 3, 1).reshape(2, -1)  # each patch as (P, P, C)
            torch.testing.assert_close(patches[:, i * 2 + j], flat)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_logits_loss_and_pooling(pool):
    model = vit(pool=pool)
    x, y = images(), torch.tensor([1, 2, 3])
    logits, loss = model(x, y)
    assert logits.shape == (3, 10)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, y).item())
    assert model(x)[1] is None
    tokens = 16 + (pool == "cls")
    assert model.pos_embed.shape == (1, tokens, 32)
    assert (model.cls_token is not None) == (pool == "cls")
    seen = []
    model.head.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    final = []
    model.final_norm.register_forward_hook(lambda m, a, o: final.append(o))
    model(x)
    expected = final[0][:, 0] if pool == "cls" else final[0].mean(1)
    torch.testing.assert_close(seen[0], expected)


def test_attention_is_bidirectional():
    model = vit(pool="mean")
    x = images()
    changed = x.clone()
    changed[:, :, -2:, -2:] += 1.0  # the last patch only
    seen = []
    model.final_norm.register_forward_hook(lambda m, a, o: seen.append(o))
    model(x)
    model(changed)
    assert not torch.allclose(seen[0][:, 0], seen[1][:, 0])  # the first token sees the last


def test_dual_patchnorm():
    model = vit(dual_patchnorm=True, norm="rmsnorm", channels=3)
    assert model.patch_norm_in.dim == 2 * 2 * 3 and model.patch_norm_out.dim == 32
    seen = []
    model.patch_embed.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    x = images(c=3)
    model(x)
    torch.testing.assert_close(seen[0], model.patch_norm_in(patchify(x, 2)))
    assert vit().patch_norm_in is None and vit().patch_norm_out is None


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_model_level_norms_follow_the_scheme(scheme):
    model = vit(placement=scheme)
    layout = model.layout
    assert (model.final_norm is not None) == layout.final_norm
    block_norms = sum(len(b.norm_slots()) + inner_norms(b) for b in model.blocks)
    outside = int(layout.final_norm) + int(layout.embed_norm)
    assert sum(isinstance(m, Norm) for m in model.modules()) == block_norms + outside
    assert all(not b.attn.causal for b in model.blocks)


def test_dyt_alpha_by_position_reaches_the_patch_norms():
    by_position = {
        "attn": {"alpha_init": 0.8}, "mlp": {"alpha_init": 0.2}, "outside": {"alpha_init": 0.1}
    }
    model = vit(norm="dyt", norm_kwargs_by_position=by_position, dual_patchnorm=True)
    assert model.patch_norm_in.alpha.item() == pytest.approx(0.1)
    assert model.final_norm.alpha.item() == pytest.approx(0.1)
    assert model.blocks[1].norms["mlp_pre"].alpha.item() == pytest.approx(0.2)
    assert model.blocks[0].norms["attn_pre"].alpha.item() == pytest.approx(0.8)


def xavier_std(linear) -> float:
    fan_out, fan_in = linear.weight.shape
    return math.sqrt(2 / (fan_in + fan_out))


def test_normal_init():
    model = vit(dim=64)
    assert model.patch_embed.weight.std().item() == pytest.approx(4**-0.5, rel=0.15)
    assert model.head.weight.std().item() == pytest.approx(0.02, rel=0.15)
    assert model.pos_embed.std().item() == pytest.approx(0.02, rel=0.15)
    assert model.blocks[0].mlp.fc1.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_deepnorm_uses_the_encoder_constants():
    depth = 6
    model = vit(placement="deepnorm", depth=depth, dim=64)
    beta = (8 * depth) ** -0.25
    for block in model.blocks:
        assert block.placement.residual_scale == pytest.approx((2 * depth) ** 0.25)
        for linear in (block.attn.v_proj, block.mlp.fc2):
            assert linear.weight.std().item() == pytest.approx(beta * xavier_std(linear), rel=0.08)
        q = block.attn.q_proj
        assert q.weight.std().item() == pytest.approx(xavier_std(q), rel=0.08)


def test_tfixup_uses_the_encoder_rule():
    depth = 4
    model = vit(placement="tfixup", depth=depth, dim=64)
    assert not any(isinstance(m, Norm) for m in model.modules())
    for block in model.blocks:
        for linear in (block.attn.out_proj, block.mlp.fc1):
            expected = 0.67 * depth**-0.25 * xavier_std(linear)
            assert linear.weight.std().item() == pytest.approx(expected, rel=0.08)
    embed = model.patch_embed
    expected = (9 * depth) ** -0.25 * xavier_std(embed)
    assert embed.weight.std().item() == pytest.approx(expected, rel=0.2)  # only 4 × 64 weights


def test_num_params():
    model = vit()
    assert model.num_params() == sum(p.numel() for p in model.parameters())
    assert model.num_params(non_embedding=True) == model.num_params() - 17 * 32


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"placement": "sandwich"}, ValueError, "known schemes"),
        ({"norm": "ln"}, ValueError, "known norms"),
        ({"image_size": 9}, ValueError, "divisible by patch_size"),
        ({"pool": "max"}, ValueError, "pool must be 'cls' or 'mean'"),
        ({"norm_kwargs_by_position": {"outside": {"alpha_init": 1.0}}}, TypeError, "alpha_init"),
    ],
)
def test_bad_configs(overrides, error, message):
    with pytest.raises(error, match=message):
        ViT(ViTConfig(**{**TINY, **overrides}))


def test_bad_inputs():
    model = vit()
    with pytest.raises(ValueError, match=r"images must have shape \(B, 1, 8, 8\)"):
        model(images(c=3))
    with pytest.raises(TypeError, match="floating point"):
        model(images().long())
    with pytest.raises(ValueError, match="targets must be an int64"):
        model(images(), torch.tensor([1.0, 2.0, 3.0]))
