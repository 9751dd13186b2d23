"""Blocks against references written from the papers' formulas, scheme × norm.

The references below use the block's own parameters and norm modules (the norms are tested by
the contract tests) but their own attention (explicit softmax), MLP and wiring, one formula per
scheme as its paper writes it.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from normlab.blocks import (
    SCHEMES,
    Block,
    gpas,
    make_block,
    resolve_layout,
    resolve_placement,
)
from normlab.blocks.init import init_block
from normlab.norms import Norm, get_norm_class, list_norms

DIM, HEADS, RATIO, DEPTH = 16, 2, 2.0, 6

# The norms that make sense in every normed slot: the token/elementwise staples and every
# batch-statistics norm that is registered.
STAPLES = [n for n in ("layernorm", "rmsnorm", "dyt", "identity") if n in list_norms()]
BATCH = [n for n in list_norms() if get_norm_class(n).info.stats == "batch"]
NORMS = STAPLES + BATCH


def ref_attention(block: Block, x: torch.Tensor, causal: bool, mask=None) -> torch.Tensor:
    attn = block.attn
    b, t, d = x.shape
    dh = d // HEADS

    def heads(linear, norm=None):
        y = F.linear(x, linear.weight, linear.bias).view(b, t, HEADS, dh)
        if norm is not None:  # HybridNorm's QKV-norm: each head's d channels, one weight
            y = norm(y)
        return y.transpose(1, 2)

    q, k, v = (heads(p, n) for p, n in zip(
        (attn.q_proj, attn.k_proj, attn.v_proj), (attn.q_norm, attn.k_norm, attn.v_norm),
        strict=True))
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)  # (B, H, T, T)
    allowed = torch.ones(t, t, dtype=torch.bool)
    if causal:
        allowed = allowed.tril()
    if mask is not None:
        allowed = allowed & mask[:, None, None, :]
    scores = scores.masked_fill(~allowed, -math.inf)
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
    y = F.linear(y, attn.out_proj.weight, attn.out_proj.bias)
    if attn.head_scale is not None:  # NormFormer, after out_proj: chunk h of D/H channels × γ_h
        y = y * attn.head_scale.repeat_interleave(dh)
    return y


def ref_mlp(block: Block, x: torch.Tensor, hidden_norm=None) -> torch.Tensor:
    mlp = block.mlp
    h = F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias))
    if hidden_norm is not None:
        h = hidden_norm(h)
    return F.linear(h, mlp.fc2.weight, mlp.fc2.bias)


def ref_block(scheme: str, block: Block, x, layer_index: int, depth: int, causal=True):
    """The block output, one formula per scheme (as in each scheme's paper, docs/placements.md)."""
    n = block.norm_slots()
    g = block.gates

    def A(z):
        return ref_attention(block, z, causal)

    def M(z, hidden=None):
        return ref_mlp(block, z, hidden)

    def pre_ln(z, scale=1.0):
        h = z + A(scale * n["attn_pre"](z))
        return h + M(scale * n["mlp_pre"](h))

    def post_ln(z, alpha=1.0):
        h = n["attn_post"](alpha * z + A(z))
        return n["mlp_post"](alpha * h + M(h))

    if scheme == "pre":
        return pre_ln(x)
    if scheme == "post":
        return post_ln(x)
    if scheme == "mix":
        return post_ln(x) if layer_index < math.floor(0.25 * depth) else pre_ln(x)
    if scheme == "lns":
        return pre_ln(x, 1 / math.sqrt(layer_index + 1))
    if scheme == "deepnorm":
        return post_ln(x, (2 * depth) ** 0.25)
    if scheme == "peri":
        h = x + n["attn_branch_out"](A(n["attn_pre"](x)))
        return h + n["mlp_branch_out"](M(n["mlp_pre"](h)))
    if scheme == "normformer":
        h = x + n["attn_branch_out"](A(n["attn_pre"](x)))
        return h + M(n["mlp_pre"](h), n["mlp_hidden"])
    if scheme == "gpas":
        a = g["stream"]
        h = (1 - F.silu(a)) * (x + A(n["attn_pre"](x)))
        return (1 - F.silu(a)) * (h + M(n["mlp_pre"](h)))
    if scheme == "rezero":
        h = x + g["branch"] * A(x)
        return h + g["branch"] * M(h)
    if scheme == "skipinit":
        h = x + g["branch_attn"] * A(x)
        return h + g["branch_mlp"] * M(h)
    if scheme in ("tfixup", "none"):
        h = x + A(x)
        return h + M(h)
    if scheme == "olmo2":
        h = x + n["attn_branch_out"](A(x))
        return h + n["mlp_branch_out"](M(h))
    if scheme == "hybridnorm":  # QKV-norm inside A; Y = N(x + A(x)); out = Y + FFN(Y)
        h = n["attn_post"](x + A(x))
        return h + M(h)
    raise AssertionError(f"no reference for {scheme!r}")


def norm_free(scheme: str) -> bool:
    p = resolve_placement(scheme, DEPTH - 1, DEPTH)
    return not (p.attn or p.mlp)


# Hyper-connection blocks map n streams to n streams: tests/blocks/test_hyper.py.
MATRIX = [(s, n) for s in SCHEMES if s != "hc"
          for n in (NORMS if not norm_free(s) else NORMS[:1])]


def perturbed_block(scheme: str, norm: str, layer_index: int, seed: int = 0) -> Block:
    torch.manual_seed(seed)
    block = make_block(
        DIM, HEADS, scheme=scheme, norm=norm, layer_index=layer_index, depth=DEPTH,
        mlp_ratio=RATIO,
    ).double()
    with torch.no_grad():  # move gates, head scales and norm affines off their init
        for p in block.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return block


@pytest.mark.parametrize("layer_index", [0, 3])
@pytest.mark.parametrize(("scheme", "norm"), MATRIX)
def test_block_matches_the_formula(scheme, norm, layer_index):
    block = perturbed_block(scheme, norm, layer_index)
    twin = copy.deepcopy(block)  # stateful norms (streaming statistics) see each input once
    x = torch.randn(3, 5, DIM, dtype=torch.float64)
    expected = ref_block(scheme, twin, x, layer_index, DEPTH)
    torch.testing.assert_close(block(x), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("scheme", "norm"), MATRIX)
def test_norm_slots_match_the_placement(scheme, norm):
    block = make_block(DIM, HEADS, scheme=scheme, norm=norm, depth=DEPTH, mlp_ratio=RATIO)
    placement = block.placement
    expected = {f"attn_{s}" for s in placement.attn} | {f"mlp_{s}" for s in placement.mlp}
    slots = block.norm_slots()
    assert set(slots) == expected
    qkv = [block.attn.q_norm, block.attn.k_norm, block.attn.v_norm] if placement.qkv_norm else []
    nested = {id(m) for norm in (*slots.values(), *qkv) for m in norm.modules() if m is not norm}
    norms = [m for m in block.modules() if isinstance(m, Norm) and id(m) not in nested]
    assert all(type(n) is get_norm_class(norm) and n.dim == DIM // HEADS for n in qkv)
    assert len(norms) == len(expected) + len(qkv)  # no norm outside the slots and QKV-norm
    cls = get_norm_class(norm)
    for key, module in slots.items():
        assert type(module) is cls
        assert module.dim == (round(RATIO * DIM) if key == "mlp_hidden" else DIM)


@pytest.mark.parametrize("name", list_norms())
def test_every_registered_norm_fills_every_slot_kind(name):
    """peri has pre and branch_out, normformer the hidden slot, post the post slot."""
    x = torch.randn(2, 4, DIM)
    for scheme in ("peri", "normformer", "post"):
        block = make_block(DIM, HEADS, scheme=scheme, norm=name, depth=2,
                           norm_kwargs=get_norm_class(name).example_kwargs(DIM))
        out = block(x)
        assert out.shape == x.shape and torch.isfinite(out).all()


def test_gate_parameters_per_scheme():
    assert set(make_block(DIM, HEADS, scheme="rezero").gates) == {"branch"}
    assert set(make_block(DIM, HEADS, scheme="skipinit").gates) == {"branch_attn", "branch_mlp"}
    assert set(make_block(DIM, HEADS, scheme="gpas").gates) == {"stream"}
    assert set(make_block(DIM, HEADS, scheme="pre").gates) == set()
    resid = make_block(DIM, HEADS, scheme="normformer", scale_resids=True).gates["residual"]
    assert resid.shape == (DIM,) and torch.equal(resid, torch.ones(DIM))


@pytest.mark.parametrize("scheme", ["rezero", "skipinit"])
def test_gated_blocks_are_the_identity_at_init(scheme):
    block = make_block(DIM, HEADS, scheme=scheme, layer_index=1, depth=4)
    with torch.no_grad():
        for gate in block.gates.values():
            gate.fill_(0.3)
    init_block(block, resolve_layout(scheme, 4).init)
    x = torch.randn(2, 5, DIM)
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)


def test_gpas_block_at_init_is_the_pre_ln_block():
    gpas_block = make_block(DIM, HEADS, scheme="gpas", depth=2)
    pre_block = make_block(DIM, HEADS, scheme="pre", depth=2)
    state = {k: v for k, v in gpas_block.state_dict().items() if not k.startswith("gates.")}
    pre_block.load_state_dict(state)
    x = torch.randn(2, 5, DIM)
    torch.testing.assert_close(gpas_block(x), pre_block(x), rtol=0, atol=0)


def test_normformer_residual_scale_is_on_the_mlp_shortcut_only():
    block = make_block(DIM, HEADS, scheme="normformer", scale_resids=True, depth=2).double()
    with torch.no_grad():
        block.gates["residual"].uniform_(0.5, 1.5)
    x = torch.randn(2, 3, DIM, dtype=torch.float64)
    n = block.norm_slots()
    h = x + n["attn_branch_out"](ref_attention(block, n["attn_pre"](x), True))
    expected = block.gates["residual"] * h + ref_mlp(block, n["mlp_pre"](h), n["mlp_hidden"])
    torch.testing.assert_close(block(x), expected)


def test_gpas_value_and_gradient_follow_the_formula():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    a = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    y = gpas(x, a)
    sig = torch.sigmoid(a.detach())
    silu, dsilu = a.detach() * sig, sig * (1 + a.detach() * (1 - sig))
    torch.testing.assert_close(y, (1 - silu) * x.detach())  # forward: (1 − SiLU(a))·x
    g = torch.randn_like(x)
    y.backward(g)
    torch.testing.assert_close(x.grad, g)  # gradient-preserving: ∂/∂x = I
    torch.testing.assert_close(a.grad, -dsilu * (g * x.detach()).sum())


def test_gpas_gate_is_one_parameter_shared_by_both_sublayers():
    block = make_block(DIM, HEADS, scheme="gpas", depth=2).double()
    with torch.no_grad():
        block.gates["stream"].fill_(0.5)
    x = torch.randn(2, 3, DIM, dtype=torch.float64)
    block(x).sum().backward()
    params = [p for p in block.parameters() if p.dim() == 0]
    assert len(params) == 1 and params[0].grad is not None and params[0].grad != 0


def test_padded_keys_do_not_reach_real_queries():
    torch.manual_seed(0)
    block = make_block(DIM, HEADS, scheme="pre", norm="layernorm")
    x = torch.randn(2, 6, DIM)
    mask = torch.tensor([[1, 1, 0, 1, 0, 1], [0, 1, 1, 1, 1, 1]], dtype=torch.bool)
    noisy = torch.where(mask[..., None], x, 100 * torch.randn_like(x))
    out, out_noisy = block(x, mask), block(noisy, mask)
    torch.testing.assert_close(out[mask], out_noisy[mask])
    ref = ref_attention(block, block.norms["attn_pre"](x), True, mask)
    got = block.attn(block.norms["attn_pre"](x), mask)
    torch.testing.assert_close(got[mask], ref[mask])
    assert torch.isfinite(out).all()


def test_encoder_blocks_attend_both_ways():
    torch.manual_seed(0)
    block = make_block(DIM, HEADS, scheme="pre", architecture="encoder").double()
    x = torch.randn(2, 5, DIM, dtype=torch.float64)
    expected = ref_block("pre", block, x, 0, 1, causal=False)
    torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"dim": 15}, ValueError, "divisible by heads"),
        ({"heads": 0}, ValueError, "heads must be a positive int"),
        ({"norm": "layer_norm"}, ValueError, "known norms: .*layernorm"),
        ({"norm_kwargs": {"momentum": 0.1}}, TypeError, "unknown argument"),
        ({"scheme": "sandwich"}, ValueError, "known schemes"),
        ({"dropout": 1.0}, ValueError, "dropout"),
        ({"sublayer_norm_kwargs": {"ffn": {}}}, ValueError, "sublayer_norm_kwargs"),
    ],
)
def test_bad_block_arguments(kwargs, error, message):
    args = {"dim": DIM, "heads": HEADS, **kwargs}
    with pytest.raises(error, match=message):
        make_block(args.pop("dim"), args.pop("heads"), **args)


def test_block_rejects_a_non_placement():
    with pytest.raises(TypeError, match="placement must be a Placement"):
        Block(DIM, HEADS, "pre")
