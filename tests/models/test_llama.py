"""The Llama: RoPE, grouped-query attention, QK-norm against formulas; config, init, errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from tests.models.test_gpt import inner_norms

from normlab.bench.config import RunConfig
from normlab.bench.model import build_model
from normlab.blocks import SCHEMES, GroupedAttention, SwiGLU, rotary_cos_sin
from normlab.blocks.rotary import apply_rotary
from normlab.configs import set_field
from normlab.models import GPT, GPTConfig, Llama, LlamaConfig
from normlab.norms import Norm, get_norm_class, list_norms

TINY = dict(vocab_size=32, block_size=16, depth=2, dim=32, heads=4)
BATCH_NORMS = [n for n in list_norms() if get_norm_class(n).info.stats == "batch"]


def llama(**overrides) -> Llama:
    torch.manual_seed(0)
    return Llama(LlamaConfig(**{**TINY, **overrides}))


def tokens(b=3, t=10, vocab=32, seed=1):
    return torch.randint(0, vocab, (b, t), generator=torch.Generator().manual_seed(seed))


# ---- references written from the formulas ---------------------------------------------------


def ref_rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate each pair (x_i, x_{i+d/2}) at position m by m·θ^{-2i/d}: x (B, H, T, d)."""
    d, t = x.shape[-1], x.shape[-2]
    out = torch.empty_like(x)
    for i in range(d // 2):
        angle = torch.arange(t, dtype=torch.float64) * theta ** (-2 * i / d)
        c, s = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
        a, b = x[..., i], x[..., i + d // 2]
        out[..., i] = a * c - b * s
        out[..., i + d // 2] = a * s + b * c
    return out


def ref_rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def ref_grouped_attention(attn: GroupedAttention, x: torch.Tensor) -> torch.Tensor:
    """Causal attention with QK RMSNorm (per head or across heads), RoPE and grouped K/V."""
    b, t, _ = x.shape
    h, hkv, d = attn.heads, attn.kv_heads, attn.head_dim
    q, k, v = (F.linear(x, p.weight, p.bias) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    if attn.qk_norm == "across_heads":  # one statistic over all H·d (H_kv·d) channels
        q = ref_rms(q, attn.q_norm.weight, attn.q_norm.eps)
        k = ref_rms(k, attn.k_norm.weight, attn.k_norm.eps)
    q, k, v = q.view(b, t, h, d), k.view(b, t, hkv, d), v.view(b, t, hkv, d)
    if attn.qk_norm == "per_head":  # one statistic per head, the (d,) weight shared by heads
        q = ref_rms(q, attn.q_norm.weight, attn.q_norm.eps)
        k = ref_rms(k, attn.k_norm.weight, attn.k_norm.eps)
    q, k, v = (z.transpose(1, 2) for z in (q, k, v))
    if attn.rope_theta is not None:
        q, k = ref_rope(q, attn.rope_theta), ref_rope(k, attn.rope_theta)
    out = torch.empty(b, h, t, d)
    for head in range(h):
        g = head * hkv // h  # the key/value head that serves this query head
        scores = q[:, head] @ k[:, g].transpose(-1, -2) / math.sqrt(d)  # (B, T, T)
        scores = scores.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), -math.inf)
        out[:, head] = scores.softmax(-1) @ v[:, g]
    return F.linear(out.transpose(1, 2).reshape(b, t, h * d), attn.out_proj.weight,
                    attn.out_proj.bias)


def perturbed_attention(**kwargs) -> GroupedAttention:
    torch.manual_seed(0)
    attn = GroupedAttention(32, 4, causal=True, **kwargs)
    with torch.no_grad():
        for norm in (attn.q_norm, attn.k_norm):
            if norm is not None:
                norm.weight.uniform_(0.5, 1.5)
    return attn


@pytest.mark.parametrize("qk_norm", [None, "per_head", "across_heads"])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_grouped_attention_matches_the_formula(qk_norm, kv_heads):
    attn = perturbed_attention(kv_heads=kv_heads, rope_theta=100.0, qk_norm=qk_norm)
    x = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(attn(x), ref_grouped_attention(attn, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("qk_norm", ["per_head", "across_heads"])
def test_the_gpt_takes_qk_norm_without_rope(qk_norm):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY, qk_norm=qk_norm, norm="rmsnorm"))
    attn = model.blocks[0].attn
    assert isinstance(attn, GroupedAttention) and attn.rope_theta is None
    assert attn.q_proj.bias is not None and attn.q_norm.name == "rmsnorm"
    with torch.no_grad():
        for p in attn.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 7, 32)
    torch.testing.assert_close(attn(x), ref_grouped_attention(attn, x), rtol=1e-5, atol=1e-5)
    assert not isinstance(GPT(GPTConfig(**TINY)).blocks[0].attn, GroupedAttention)
    with pytest.raises(ValueError, match="qk_norm must be None"):
        GPTConfig(qk_norm="yes")


def test_qk_norm_weight_shapes():
    per_head = GroupedAttention(32, 4, causal=True, kv_heads=2, qk_norm="per_head")
    assert per_head.q_norm.weight.shape == per_head.k_norm.weight.shape == (8,)
    across = GroupedAttention(32, 4, causal=True, kv_heads=2, qk_norm="across_heads")
    assert (across.q_norm.weight.shape, across.k_norm.weight.shape) == ((32,), (16,))
    assert (across.k_proj.weight.shape, across.v_proj.weight.shape) == ((16, 32), (16, 32))


def test_grouped_attention_is_multi_head_attention_with_repeated_kv_weights():
    """kv_heads = H/2 equals H heads whose key/value weights repeat per group of 2."""
    grouped = perturbed_attention(kv_heads=2)
    full = perturbed_attention(kv_heads=4)
    with torch.no_grad():
        full.q_proj.weight.copy_(grouped.q_proj.weight)
        full.out_proj.weight.copy_(grouped.out_proj.weight)
        for name in ("k_proj", "v_proj"):
            w = getattr(grouped, name).weight.view(2, 8, 32).repeat_interleave(2, dim=0)
            getattr(full, name).weight.copy_(w.reshape(32, 32))
    x = torch.randn(2, 6, 32)
    torch.testing.assert_close(grouped(x), full(x))


@pytest.mark.parametrize("shift", [1, 5, 100])
def test_rope_scores_depend_on_relative_position_only(shift):
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 9, 16, generator=gen), torch.randn(2, 3, 9, 16, generator=gen)
    positions = torch.arange(9)

    def scores(offset):
        cos, sin = rotary_cos_sin(positions + offset, 16, 10_000.0)
        return apply_rotary(q, cos, sin) @ apply_rotary(k, cos, sin).transpose(-1, -2)

    torch.testing.assert_close(scores(shift), scores(0), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(scores(0), q @ k.transpose(-1, -2), atol=1e-2)  # RoPE acts


def test_rope_matches_the_pairwise_rotation():
    x = torch.randn(2, 3, 9, 16)
    cos, sin = rotary_cos_sin(torch.arange(9), 16, 500.0)
    torch.testing.assert_close(apply_rotary(x, cos, sin), ref_rope(x, 500.0))


@pytest.mark.parametrize("qk_norm", [None, "per_head", "across_heads"])
def test_causal_with_qk_norm(qk_norm):
    """Changing a later token leaves the logits of every earlier position unchanged."""
    model = llama(qk_norm=qk_norm, kv_heads=2).eval()
    idx = tokens(2, 12)
    other = idx.clone()
    other[:, 7] = (other[:, 7] + 1) % 32
    a, b = model(idx)[0], model(other)[0]
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


# a QK norm of another name takes its own defaults: not a norm with a required argument
PLAIN_NORMS = [n for n in list_norms() if not get_norm_class(n).example_kwargs(8)]


@pytest.mark.parametrize("norm", PLAIN_NORMS)
@pytest.mark.parametrize("qk_norm", ["per_head", "across_heads"])
def test_qk_norm_takes_every_registered_norm(norm, qk_norm):
    model = llama(qk_norm=qk_norm, qk_norm_name=norm, kv_heads=2)
    attn = model.blocks[0].attn
    assert isinstance(attn.q_norm, Norm) and attn.q_norm.name == norm
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[0, 6:] = False
    _, loss = model(tokens(), tokens(seed=2), mask)
    loss.backward()
    assert torch.isfinite(loss)


def test_qk_norm_uses_the_model_norm_and_its_kwargs_by_default():
    model = llama(norm="layernorm", norm_kwargs={"eps": 1e-3}, qk_norm="per_head")
    attn = model.blocks[0].attn
    assert attn.q_norm.name == "layernorm" and attn.q_norm.eps == 1e-3
    other = llama(norm="layernorm", norm_kwargs={"eps": 1e-3}, qk_norm="per_head",
                  qk_norm_name="rmsnorm")
    assert other.blocks[0].attn.k_norm.name == "rmsnorm"
    assert other.blocks[0].attn.k_norm.eps == 1e-6  # its own default


# ---- the model -------------------------------------------------------------------------------


def test_default_config_is_llama_shaped():
    c = LlamaConfig()
    assert (c.norm, c.placement, c.kv_heads, c.rope_theta, c.qk_norm) == (
        "rmsnorm", "pre", None, 10_000.0, None
    )
    assert (c.tie_embeddings, c.init_std, c.scale_out_proj_by_depth, c.embed_scale) == (
        False, 0.02, False, 1.0
    )
    assert c.mlp_hidden == 352  # 8/3·128 = 341.3 → the next multiple of 16
    assert LlamaConfig(dim=4096, heads=32, mlp_multiple_of=256).mlp_hidden == 11008  # LLaMA-7B
    assert LlamaConfig(dim=64, heads=4, mlp_ratio=11008 / 64, mlp_multiple_of=1).mlp_hidden == 11008


def test_structure_no_biases_no_position_table():
    model = llama(kv_heads=2)
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())
    assert not any(isinstance(m, torch.nn.Embedding) and m is not model.wte
                   for m in model.modules())
    block = model.blocks[0]
    assert isinstance(block.attn, GroupedAttention) and isinstance(block.mlp, SwiGLU)
    assert block.mlp.fc1.out_features == LlamaConfig(**TINY).mlp_hidden == 96


def test_logits_loss_and_padding_mask():
    model = llama()
    idx, targets = tokens(), tokens(seed=2)
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 10, 32)
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 32), targets.flatten()))
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, 4:] = False
    _, masked = model(idx, targets, mask)
    nll = -logits.log_softmax(-1).gather(-1, targets[..., None])[..., 0]
    assert masked.item() == pytest.approx((nll[mask].sum() / mask.sum()).item(), rel=1e-5)


def test_tied_and_untied_heads():
    tied, untied = llama(tie_embeddings=True), llama()
    assert tied.lm_head.weight is tied.wte.weight
    assert untied.lm_head.weight is not untied.wte.weight
    assert untied.num_params() - tied.num_params() == 32 * 32


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_every_scheme_builds_the_model_level_norms(scheme):
    model = llama(placement=scheme, qk_norm=None if scheme == "hybridnorm" else "per_head")
    layout = model.layout
    assert (model.final_norm is not None) == layout.final_norm
    assert (model.embed_norm is not None) == layout.embed_norm
    block_norms = sum(len(b.norm_slots()) + inner_norms(b) for b in model.blocks)
    outside = int(layout.final_norm) + int(layout.embed_norm)
    assert sum(isinstance(m, Norm) for m in model.modules()) == block_norms + outside


def test_olmo2_block_is_x_plus_norm_of_the_branch():
    model = llama(placement="olmo2", qk_norm="across_heads")
    block = model.blocks[0]
    assert set(block.norm_slots()) == {"attn_branch_out", "mlp_branch_out"}
    x = torch.randn(2, 5, 32)
    n = block.norm_slots()
    h = x + n["attn_branch_out"](block.attn(x))
    torch.testing.assert_close(block(x), h + n["mlp_branch_out"](block.mlp(h)))


def std(w: torch.Tensor) -> float:
    return w.std().item()


def test_init_recipes():
    model = llama(dim=64, depth=4, vocab_size=256, init_std=0.05)
    for linear in [m for m in model.modules() if isinstance(m, torch.nn.Linear)]:
        assert std(linear.weight) / 0.05 == pytest.approx(1, abs=0.1)
    assert std(model.wte.weight) / 0.05 == pytest.approx(1, abs=0.1)
    scaled = llama(dim=64, depth=4, vocab_size=256, scale_out_proj_by_depth=True)
    for block in scaled.blocks:
        for linear in (block.attn.out_proj, block.mlp.fc2):
            assert std(linear.weight) / (0.02 / math.sqrt(8)) == pytest.approx(1, abs=0.1)
        for linear in (block.attn.q_proj, block.mlp.gate, block.mlp.fc1):
            assert std(linear.weight) / 0.02 == pytest.approx(1, abs=0.1)


def test_deepnorm_scales_the_swiglu_gate_with_beta():
    model = llama(placement="deepnorm", dim=64, depth=6)
    beta = (8 * 6) ** -0.25
    for linear in (model.blocks[0].mlp.gate, model.blocks[0].mlp.fc1):
        xavier = math.sqrt(2 / sum(linear.weight.shape))
        assert std(linear.weight) / (beta * xavier) == pytest.approx(1, abs=0.08)
    with pytest.warns(UserWarning, match="scale_out_proj_by_depth is ignored"):
        llama(placement="deepnorm", scale_out_proj_by_depth=True)


@pytest.mark.parametrize(("scale", "factor"), [(1.0, 1.0), (3.0, 3.0), ("sqrt_dim", 32**0.5)])
def test_embed_scale(scale, factor):
    model = llama(embed_scale=scale, placement="none")
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    idx = tokens()
    model(idx)
    torch.testing.assert_close(seen[0], model.wte(idx) * factor)


@pytest.mark.filterwarnings("ignore:prepbn")
@pytest.mark.parametrize("norm", BATCH_NORMS)
def test_padding_never_reaches_real_tokens_through_qk_norm(norm):
    model = llama(norm=norm, qk_norm="per_head", kv_heads=2)
    gen = torch.Generator().manual_seed(5)
    idx, targets = tokens(4, 12), tokens(4, 12, seed=6)
    mask = torch.rand(4, 12, generator=gen) > 0.35
    mask[:, 0] = True
    other = torch.where(mask, idx, torch.randint(0, 32, idx.shape, generator=gen))
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    torch.testing.assert_close(a(idx, targets, mask)[1], b(other, targets, mask)[1])
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=f"state {key} differs")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kv_heads": 3}, "kv_heads=3 must divide heads=4"),
        ({"kv_heads": 0}, "kv_heads must be a positive int"),
        ({"dim": 20, "heads": 4}, "head size dim/heads = 5 must be even"),
        ({"qk_norm": "per_token"}, "qk_norm must be None, 'per_head' or 'across_heads'"),
        ({"qk_norm_name": "ln"}, "known norms"),
        ({"rope_theta": 0.0}, "rope_theta must be > 0"),
        ({"embed_scale": "sqrt"}, "embed_scale must be a positive number or 'sqrt_dim'"),
        ({"init_std": 0.0}, "init_std must be > 0"),
        ({"mlp_multiple_of": 0}, "mlp_multiple_of must be a positive int"),
        ({"placement": "sandwich"}, "known schemes"),
    ],
)
def test_bad_configs(overrides, message):
    with pytest.raises(ValueError, match=message) as error:
        Llama(LlamaConfig(**{**TINY, **overrides}))
    assert "\n" not in str(error.value)


def test_bad_inputs():
    model = llama()
    with pytest.raises(ValueError, match="Llama: sequence length 17 exceeds block_size=16"):
        model(tokens(t=17))
    with pytest.raises(ValueError, match="idx must be an int64"):
        model(tokens().float())


def bench_config(**fields) -> RunConfig:
    cfg = RunConfig()
    for key, value in fields.items():
        set_field(cfg, key, value)
    return cfg


def test_the_bench_builds_the_llama_by_field_name():
    cfg = bench_config(**{"model.kind": "llama", "model.kv_heads": 2, "model.qk_norm": "per_head",
                          "model.embed_scale": "sqrt_dim", "model.rope_theta": 500.0,
                          "norm.name": "rmsnorm", "placement.name": "olmo2"})
    model = build_model(cfg)
    assert isinstance(model, Llama)
    c = model.config
    assert (c.kv_heads, c.qk_norm, c.embed_scale, c.rope_theta, c.placement) == (
        2, "per_head", "sqrt_dim", 500.0, "olmo2"
    )
    assert c.block_size == cfg.data.seq_len and c.vocab_size == 256


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model.kind": "mamba"}, r"model\.kind: 'mamba' is not one of"),
        ({"model.kind": "llama", "model.kv_heads": 3}, r"model\.heads, model\.kv_heads: "),
        ({"model.kind": "llama", "model.dim": 20, "model.heads": 4}, r"model\.dim, model\.heads"),
    ],
)
def test_bench_errors_name_the_fields(fields, message):
    with pytest.raises(ValueError, match=message):
        build_model(bench_config(**fields))


def test_learnable_embedding_gain_scales_the_token_embeddings():
    plain, gained = llama(norm="dyt"), llama(norm="dyt", embed_gain_init=8.0)  # untied head
    assert plain.embed_gain is None and gained.embed_gain.item() == 8.0
    with torch.no_grad():
        plain.wte.weight.mul_(8.0)
    idx = tokens()
    assert torch.allclose(plain(idx)[0], gained(idx)[0], atol=1e-6)
    gained(idx, tokens(seed=2))[1].backward()
    assert gained.embed_gain.grad.abs() > 0
    with torch.no_grad():
        gained.embed_gain.fill_(1.0)
    gained.init_weights()
    assert gained.embed_gain.item() == 8.0
    with pytest.raises(ValueError, match=r"LlamaConfig\.embed_gain_init must be > 0"):
        LlamaConfig(embed_gain_init=-1.0)
