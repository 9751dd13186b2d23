"""HybridNorm: the layout the official code builds, and QKV-norm inside both attentions.

The block formula itself is checked with every norm by test_block (`ref_block`).
"""

from __future__ import annotations

import pytest
import torch

from normlab.blocks import Placement, make_block, resolve_layout
from normlab.blocks.attention import GroupedAttention
from normlab.blocks.block import Attention
from normlab.blocks.placement import PRE
from normlab.norms import make_norm


def test_layout_is_qkv_norm_and_a_normalized_ffn_residual():
    layout = resolve_layout("hybridnorm", 4)
    assert layout.final_norm and not layout.embed_norm
    assert all(p == Placement(attn=("post",), qkv_norm=True) for p in layout.blocks)


def test_hybridnorm_star_makes_block_zero_pre_norm_with_qkv_norm():
    layout = resolve_layout("hybridnorm", 3, first_block_pre=True)
    assert layout.blocks[0] == Placement(attn=("pre",), mlp=("pre",), qkv_norm=True)
    assert layout.blocks[1:] == resolve_layout("hybridnorm", 3).blocks[1:]
    assert PRE.qkv_norm is False


def _qkv_norm(width: int):
    return make_norm("rmsnorm", width, eps=1e-12)


@pytest.mark.parametrize("grouped", [False, True])
def test_qkv_norm_makes_attention_invariant_to_the_input_scale(grouped):
    """Every head's q, k and v is normalized and the projections have no bias, so the output
    does not depend on the scale of the residual stream (which HybridNorm never normalizes
    before attention)."""
    torch.manual_seed(0)
    if grouped:
        attn = GroupedAttention(16, 4, causal=True, kv_heads=2, qkv_norm=_qkv_norm).double()
    else:
        attn = Attention(16, 4, causal=True, bias=False, qkv_norm=_qkv_norm).double()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    torch.testing.assert_close(attn(37.0 * x), attn(x), rtol=1e-9, atol=1e-9)
    plain = Attention(16, 4, causal=True, bias=False).double()  # the control: not invariant
    assert not torch.allclose(plain(37.0 * x), plain(x))


def test_grouped_qkv_norm_is_per_head_before_rope():
    torch.manual_seed(0)
    attn = GroupedAttention(16, 4, causal=True, kv_heads=2, rope_theta=None,
                            qkv_norm=_qkv_norm).double()
    with torch.no_grad():
        for norm in (attn.q_norm, attn.k_norm, attn.v_norm):
            norm.weight.add_(torch.randn_like(norm.weight))
    assert attn.q_norm.dim == attn.v_norm.dim == 4
    x = torch.randn(2, 3, 16, dtype=torch.float64)
    v = attn.qkv(x)[2]  # (B, H, T, d), repeated per group
    raw_v = attn.v_proj(x).view(2, 3, 2, 4)
    rms = raw_v.pow(2).mean(-1, keepdim=True).add(1e-12).sqrt()
    expected = (raw_v / rms * attn.v_norm.weight).transpose(1, 2).repeat_interleave(2, dim=1)
    torch.testing.assert_close(v, expected)


def test_llama_block_under_hybridnorm_normalizes_q_k_and_v():
    from normlab.models import Llama, LlamaConfig

    model = Llama(LlamaConfig(depth=2, dim=16, heads=2, placement="hybridnorm"))
    attn = model.blocks[0].attn
    assert attn.qk_norm == "per_head" and attn.v_norm is not None
    assert set(model.blocks[0].norm_slots()) == {"attn_post"}


@pytest.mark.parametrize("qk_norm", ["per_head", "across_heads"])
def test_model_qk_norm_and_qkv_norm_placement_refuse_together(qk_norm):
    from normlab.models import GPTConfig, LlamaConfig

    for config in (GPTConfig, LlamaConfig):
        with pytest.raises(ValueError, match="qk_norm"):
            config(depth=2, dim=16, heads=2, placement="hybridnorm", qk_norm=qk_norm)


def test_hybridnorm_block_on_rmsnorm_has_three_qkv_norms_and_one_slot():
    block = make_block(16, 2, scheme="hybridnorm", norm="rmsnorm", depth=2)
    assert block.attn.q_norm.dim == 8 and block.attn.v_norm is not None
    assert set(block.norm_slots()) == {"attn_post"}
