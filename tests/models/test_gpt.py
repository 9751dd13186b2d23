"""The GPT: interface, loss, schemes' model-level parts, init recipes, padding."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from normlab.blocks import SCHEMES
from normlab.models import GPT, GPTConfig
from normlab.norms import Norm, get_norm_class, list_norms

TINY = dict(vocab_size=32, block_size=16, depth=2, dim=32, heads=4)
BATCH_NORMS = [n for n in list_norms() if get_norm_class(n).info.stats == "batch"]


def gpt(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **overrides}))


def tokens(b=3, t=10, vocab=32, seed=1):
    return torch.randint(0, vocab, (b, t), generator=torch.Generator().manual_seed(seed))


def test_default_config_is_the_documented_one():
    c = GPTConfig()
    assert (c.vocab_size, c.block_size, c.depth, c.dim, c.heads, c.mlp_ratio) == (
        256, 256, 4, 128, 4, 4.0
    )
    assert (c.norm, c.norm_kwargs, c.placement, c.placement_kwargs) == ("layernorm", {}, "pre", {})
    assert (c.dropout, c.bias, c.tie_embeddings, c.norm_kwargs_by_position) == (0.0, True, True, {})


def test_logits_and_loss():
    model = gpt()
    idx, targets = tokens(), tokens(seed=2)
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 10, 32)
    expected = F.cross_entropy(logits.reshape(-1, 32), targets.reshape(-1))
    assert loss.item() == pytest.approx(expected.item())
    assert model(idx)[1] is None


def test_loss_is_the_mean_over_real_positions_only():
    model = gpt()
    idx, targets = tokens(), tokens(seed=2)
    mask = torch.rand(3, 10, generator=torch.Generator().manual_seed(3)) > 0.4
    mask[:, 0] = True
    logits, loss = model(idx, targets, mask)
    nll = -logits.log_softmax(-1).gather(-1, targets[..., None])[..., 0]  # (B, T)
    assert loss.item() == pytest.approx((nll[mask].sum() / mask.sum()).item(), rel=1e-6)


def test_tied_and_untied_embeddings_and_num_params():
    tied, untied = gpt(), gpt(tie_embeddings=False)
    assert tied.lm_head.weight is tied.wte.weight
    assert untied.lm_head.weight is not untied.wte.weight
    assert untied.num_params() - tied.num_params() == 32 * 32
    manual = sum(p.numel() for p in {id(p): p for p in tied.parameters()}.values())
    assert tied.num_params() == manual
    assert tied.num_params(non_embedding=True) == manual - 16 * 32


def inner_norms(block) -> int:
    """Norms inside a block that are no placement slot: QK(V)-norms in attention, the dynamic
    hyper-connections' LayerNorms."""
    attn = sum(n is not None for n in (block.attn.q_norm, block.attn.k_norm, block.attn.v_norm))
    hyper = block.hyper.values() if block.hyper is not None else ()
    return attn + sum(h.norm is not None for h in hyper)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_model_level_norms_follow_the_scheme(scheme):
    model = gpt(placement=scheme)
    layout = model.layout
    assert (model.final_norm is not None) == layout.final_norm
    assert (model.embed_norm is not None) == layout.embed_norm
    block_norms = sum(len(b.norm_slots()) + inner_norms(b) for b in model.blocks)
    outside = int(layout.final_norm) + int(layout.embed_norm)
    assert sum(isinstance(m, Norm) for m in model.modules()) == block_norms + outside
    # the head reads a normalized stream unless the scheme has no norm at all
    ends_with_norm = "post" in layout.blocks[-1].mlp
    norm_free = not any(b.attn or b.mlp for b in layout.blocks)
    assert layout.final_norm or ends_with_norm or norm_free


def test_peri_embedding_norm_is_applied():
    model = gpt(placement="peri", placement_kwargs={"embed_norm": True})
    seen = []
    model.embed_norm.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    idx = tokens()
    model(idx)
    expected = model.wte(idx) + model.wpe(torch.arange(10))
    torch.testing.assert_close(seen[0], expected)


DYT_BY_POSITION = {
    "attn": {"alpha_init": 0.8}, "mlp": {"alpha_init": 0.2}, "outside": {"alpha_init": 0.1}
}


def test_dyt_alpha_by_position():
    model = gpt(norm="dyt", norm_kwargs_by_position=DYT_BY_POSITION, placement="normformer")
    for block in model.blocks:
        for key, norm in block.norm_slots().items():
            assert norm.alpha.item() == pytest.approx(0.8 if key.startswith("attn") else 0.2)
    assert model.final_norm.alpha.item() == pytest.approx(0.1)
    default = gpt(norm="dyt")
    assert default.final_norm.alpha.item() == pytest.approx(0.5)  # DyT's own α₀


def test_learnable_embedding_gain():
    """embed_gain_init=g multiplies the token embeddings by a learned scalar starting at g."""
    untied = dict(norm="dyt", tie_embeddings=False)  # the head must not see the ×8 below
    plain, gained = gpt(**untied), gpt(**untied, embed_gain_init=8.0)
    assert plain.embed_gain is None
    assert gained.embed_gain.item() == 8.0 and gained.embed_gain.requires_grad
    with torch.no_grad():
        plain.wte.weight.mul_(8.0)  # same function: token rows × 8, position rows unchanged
    idx = tokens()
    assert torch.allclose(plain(idx)[0], gained(idx)[0], atol=1e-6)
    gained(idx, tokens(seed=2))[1].backward()
    assert gained.embed_gain.grad is not None and gained.embed_gain.grad.abs() > 0
    with torch.no_grad():
        gained.embed_gain.fill_(1.0)
    gained.init_weights()
    assert gained.embed_gain.item() == 8.0
    with pytest.raises(ValueError, match="embed_gain_init must be > 0"):
        GPTConfig(embed_gain_init=0.0)


def std_ratio(w: torch.Tensor, expected: float) -> float:
    return w.std().item() / expected


def xavier_std(linear) -> float:
    fan_out, fan_in = linear.weight.shape
    return math.sqrt(2 / (fan_in + fan_out))


def test_normal_init():
    model = gpt(dim=64, depth=2, vocab_size=256, tie_embeddings=False)
    for name, p in model.named_parameters():
        if name.endswith("bias") and "norm" not in name:
            assert torch.count_nonzero(p) == 0, name
    for linear in [m for m in model.modules() if isinstance(m, torch.nn.Linear)]:
        assert std_ratio(linear.weight, 0.02) == pytest.approx(1, abs=0.1)
    for table in (model.wte.weight, model.wpe.weight):
        assert std_ratio(table, 0.02) == pytest.approx(1, abs=0.1)


@pytest.mark.parametrize("depth", [3, 12])
def test_deepnorm_init_scales_exactly_v_out_fc1_fc2_by_beta(depth):
    model = gpt(placement="deepnorm", depth=depth, dim=64)
    beta = (8 * depth) ** -0.25
    for block in model.blocks:
        a, m = block.attn, block.mlp
        for linear in (a.q_proj, a.k_proj):
            assert std_ratio(linear.weight, xavier_std(linear)) == pytest.approx(1, abs=0.08)
        for linear in (a.v_proj, a.out_proj, m.fc1, m.fc2):
            ratio = std_ratio(linear.weight, beta * xavier_std(linear))
            assert ratio == pytest.approx(1, abs=0.08)
        for linear in (a.q_proj, a.k_proj, a.v_proj, a.out_proj, m.fc1, m.fc2):
            assert torch.count_nonzero(linear.bias) == 0
        alpha = (2 * depth) ** 0.25
        assert block.placement.residual_scale == pytest.approx(alpha)


def test_tfixup_init_and_embedding_scale():
    depth, dim = 6, 64
    model = gpt(placement="tfixup", depth=depth, dim=dim, vocab_size=256)
    factor = (9 * depth) ** -0.25
    assert not any(isinstance(m, Norm) for m in model.modules())  # final norm included
    for block in model.blocks:
        a, m = block.attn, block.mlp
        for linear in (a.q_proj, a.k_proj):
            assert std_ratio(linear.weight, xavier_std(linear)) == pytest.approx(1, abs=0.08)
        for linear in (a.v_proj, a.out_proj, m.fc1, m.fc2):
            ratio = std_ratio(linear.weight, factor * xavier_std(linear))
            assert ratio == pytest.approx(1, abs=0.08)
    assert std_ratio(model.wte.weight, factor * dim**-0.5) == pytest.approx(1, abs=0.08)
    assert model.lm_head.weight is model.wte.weight  # the tied head is scaled with it
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    idx = tokens(vocab=256)
    model(idx)
    expected = model.wte(idx) * math.sqrt(dim) + model.wpe(torch.arange(10))
    torch.testing.assert_close(seen[0], expected)


@pytest.mark.parametrize("scheme", ["rezero", "skipinit"])
def test_gated_stacks_are_the_identity_at_init(scheme):
    model = gpt(placement=scheme, depth=4)
    seen = []
    model.lm_head.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    idx = tokens()
    model(idx)
    torch.testing.assert_close(seen[0], model.wte(idx) + model.wpe(torch.arange(10)))


def test_init_weights_resets_gates_and_head_scales():
    model = gpt(placement="normformer", placement_kwargs={"scale_resids": True})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.init_weights()
    for block in model.blocks:
        assert torch.equal(block.attn.head_scale, torch.ones(4))
        assert torch.equal(block.gates["residual"], torch.ones(32))


@pytest.mark.filterwarnings("ignore:prepbn")  # eval before its schedule ends: expected here
@pytest.mark.parametrize("norm", BATCH_NORMS)
@pytest.mark.parametrize("scheme", ["pre", "post", "normformer", "peri"])
def test_padding_never_reaches_real_tokens(norm, scheme):
    """Changing padded tokens changes neither the loss nor the running statistics (train), nor
    the real logits (eval): the mask reaches every batch-statistics norm and attention."""
    options = {"embed_norm": True} if scheme == "peri" else {}
    model = gpt(norm=norm, placement=scheme, placement_kwargs=options)
    gen = torch.Generator().manual_seed(5)
    idx, targets = tokens(4, 12), tokens(4, 12, seed=6)
    mask = torch.rand(4, 12, generator=gen) > 0.35
    mask[:, 0] = True
    other = torch.where(mask, idx, torch.randint(0, 32, idx.shape, generator=gen))
    assert not torch.equal(other, idx)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    _, loss_a = a(idx, targets, mask)
    _, loss_b = b(other, targets, mask)
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-6, atol=1e-6)
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, rtol=1e-6, atol=1e-6, msg=f"state {key} differs")
    a.eval()
    logits_a, _ = a(idx, mask=mask)
    logits_b, _ = a(other, mask=mask)
    torch.testing.assert_close(logits_a[mask], logits_b[mask], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"placement": "sandwich"}, ValueError, "known schemes: post, pre, peri"),
        ({"norm": "ln"}, ValueError, "known norms: .*layernorm"),
        ({"placement": "mix", "placement_kwargs": {"a": 1}}, ValueError, "accepted: alpha"),
        ({"dim": 30}, ValueError, "divisible by heads"),
        ({"depth": 0}, ValueError, "depth must be a positive int"),
        ({"vocab_size": 0}, ValueError, "vocab_size"),
        ({"norm_kwargs_by_position": {"attn": {"alpha_init": 0.8}}}, TypeError, "alpha_init"),
        ({"norm": "dyt", "norm_kwargs_by_position": {"ffn": {}}}, ValueError, "'attn', 'mlp'"),
        ({"norm_kwargs": {"momentum": 0.1}}, TypeError, "unknown argument"),
    ],
)
def test_bad_configs(overrides, error, message):
    with pytest.raises(error, match=message):
        GPT(GPTConfig(**{**TINY, **overrides}))


def test_bad_inputs():
    model = gpt()
    with pytest.raises(ValueError, match="exceeds block_size=16"):
        model(tokens(t=17))
    with pytest.raises(ValueError, match="idx must be an int64"):
        model(tokens().float())
    with pytest.raises(ValueError, match=r"mask must be a torch\.bool"):
        model(tokens(), mask=torch.ones(3, 10))
    with pytest.raises(ValueError, match=r"targets must be a torch\.int64"):
        model(tokens(), tokens(t=9))
