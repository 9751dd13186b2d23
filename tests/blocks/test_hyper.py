"""Hyper-connections: against a per-stream reference written from the paper's Algorithm 1,
exact equality with the plain block at n = 1, and Pre-LN at init for any n."""

from __future__ import annotations

import pytest
import torch

from normlab.blocks import HyperConnection, make_block, resolve_layout, resolve_placement
from normlab.blocks.hyper import run_stack
from normlab.models import GPT, GPTConfig, Llama, LlamaConfig

DIM, HEADS = 16, 2


def twins(streams: int, dynamic: bool, norm: str = "layernorm", layer_index: int = 1):
    """A hyper-connection block and the plain Pre-LN block with the same sublayer weights."""
    torch.manual_seed(0)
    plain = make_block(DIM, HEADS, scheme="pre", norm=norm, layer_index=layer_index, depth=3)
    hc = make_block(DIM, HEADS, scheme="hc", norm=norm, layer_index=layer_index, depth=3,
                    streams=streams, dynamic=dynamic)
    missing, unexpected = hc.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("hyper.") for k in missing)
    return plain, hc


@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm", "dyt"])
def test_one_stream_is_exactly_the_plain_block(dynamic, norm):
    plain, hc = twins(1, dynamic, norm)
    x = torch.randn(3, 7, DIM)
    assert torch.equal(hc(x[:, :, None])[:, :, 0], plain(x))


def test_one_static_stream_stays_the_plain_block_after_the_sublayers_train():
    plain, hc = twins(1, dynamic=False)
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.3 * torch.randn_like(p))
    hc.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 5, DIM)
    assert torch.equal(hc(x[:, :, None])[:, :, 0], plain(x))


@pytest.mark.parametrize("model", ["gpt", "llama"])
def test_one_stream_model_is_exactly_the_pre_ln_model(model):
    def build(placement, **kw):
        torch.manual_seed(0)
        if model == "gpt":
            return GPT(GPTConfig(vocab_size=32, block_size=8, depth=2, dim=DIM, heads=HEADS,
                                 placement=placement, placement_kwargs=kw))
        return Llama(LlamaConfig(vocab_size=32, block_size=8, depth=2, dim=DIM, heads=HEADS,
                                 placement=placement, placement_kwargs=kw))

    plain, hc = build("pre"), build("hc", streams=1)
    hc.load_state_dict(plain.state_dict(), strict=False)
    idx = torch.randint(0, 32, (2, 8))
    assert torch.equal(hc(idx)[0], plain(idx)[0])


def reference(hc: HyperConnection, streams: torch.Tensor, branch) -> torch.Tensor:
    """Algorithm 1, one token and one stream at a time:
    α_j = s_α·tanh(LN(H_j) W_α) + α_j^static,  B_j = s_β·tanh(LN(H_j)·W_β) + B_j^static;
    h = Σ_j α_j0 H_j;  H'_i = B_i·F(h) + Σ_j α_j(1+i) H_j."""
    n = hc.streams
    out = torch.empty_like(streams)
    for b in range(streams.shape[0]):
        for t in range(streams.shape[1]):
            H = streams[b, t]  # (n, D)
            alpha, beta = hc.static_alpha.clone(), hc.static_beta.clone()
            if hc.norm is not None:
                for j in range(n):
                    z = torch.nn.functional.layer_norm(H[j], (H.shape[-1],), hc.norm.weight,
                                                       hc.norm.bias, 1e-5)
                    alpha[j] = alpha[j] + hc.alpha_scale * torch.tanh(z @ hc.alpha_fn)
                    beta[j] = beta[j] + hc.beta_scale * torch.tanh(z @ hc.beta_fn)
            h = sum(alpha[j, 0] * H[j] for j in range(n))
            o = branch(h)
            for i in range(n):
                out[b, t, i] = beta[i] * o + sum(alpha[j, 1 + i] * H[j] for j in range(n))
    return out


@pytest.mark.parametrize("dynamic", [False, True])
def test_hyper_connection_matches_algorithm_one(dynamic):
    torch.manual_seed(0)
    hc = HyperConnection(DIM, 3, dynamic=dynamic, layer=4).double()
    with torch.no_grad():
        for p in hc.parameters():
            p.add_(0.3 * torch.randn_like(p))
    weight = torch.randn(DIM, DIM, dtype=torch.float64)

    def branch(h):
        return torch.tanh(h @ weight)

    streams = torch.randn(2, 3, 3, DIM, dtype=torch.float64)
    h, rest, beta = hc.read(streams)
    torch.testing.assert_close(hc.write(branch(h), rest, beta), reference(hc, streams, branch))


def test_gradients_of_the_dynamic_parameters_at_init():
    """W_α, W_β are zero but s_α, s_β ≠ 0, so the W's learn from the first step; W = 0 and
    tanh(0) = 0 leave the scales and the LayerNorm without a gradient until the W's move."""
    hc = HyperConnection(DIM, 2, dynamic=True, layer=0)
    streams = torch.randn(2, 3, 2, DIM)

    def grads():
        hc.zero_grad()
        h, rest, beta = hc.read(streams)
        (hc.write(h.tanh(), rest, beta) ** 2).sum().backward()
        return {name: p.grad.abs().sum().item() for name, p in hc.named_parameters()}

    at_init = grads()
    learning = {"static_alpha", "static_beta", "alpha_fn", "beta_fn"}
    assert {k for k, v in at_init.items() if v > 0} == learning
    with torch.no_grad():
        hc.alpha_fn.normal_()
        hc.beta_fn.normal_()
    assert all(v > 0 for v in grads().values())


def test_init_is_e_k_mod_n_identity_and_ones_by_sublayer():
    layout = resolve_layout("hc", 3, streams=4)
    assert [p.hyper.layer for p in layout.blocks] == [0, 2, 4] and layout.streams == 4
    block = make_block(DIM, HEADS, scheme="hc", layer_index=2, depth=3, streams=4)
    for sublayer, k in (("attn", 4), ("mlp", 5)):
        hc = block.hyper[sublayer]
        assert torch.equal(hc.static_alpha[:, 0], torch.eye(4)[k % 4])
        assert torch.equal(hc.static_alpha[:, 1:], torch.eye(4))
        assert torch.equal(hc.static_beta, torch.ones(4))
        assert hc.alpha_scale.item() == pytest.approx(0.01) and not hc.alpha_fn.any()


@pytest.mark.parametrize("dynamic", [False, True])
def test_n_streams_at_init_equal_pre_ln_up_to_the_final_norm(dynamic):
    """All streams start equal and receive the same update, so they stay n copies of the
    Pre-LN stream; their sum is n times it, which the final LayerNorm removes up to its eps
    (tiny here: at N(0, 0.02) the default 1e-5 is a few % of the stream's variance)."""
    def build(placement, **kw):
        torch.manual_seed(0)
        return GPT(GPTConfig(vocab_size=32, block_size=8, depth=3, dim=DIM, heads=HEADS,
                             norm_kwargs={"eps": 1e-12}, placement=placement,
                             placement_kwargs=kw)).double()

    plain, hc = build("pre"), build("hc", streams=4, dynamic=dynamic)
    hc.load_state_dict(plain.state_dict(), strict=False)
    idx = torch.randint(0, 32, (2, 8))
    torch.testing.assert_close(hc(idx)[0], plain(idx)[0], rtol=1e-8, atol=1e-8)
    x = hc.wte(idx) + hc.wpe(torch.arange(8))
    streams = x.unsqueeze(-2).expand(2, 8, 4, DIM)
    for block in hc.blocks:
        streams = block(streams)
        torch.testing.assert_close(streams, streams[..., :1, :].expand_as(streams))
    torch.testing.assert_close(run_stack(hc.blocks, x, None, 4), streams.sum(-2))


@pytest.mark.parametrize(
    ("options", "message"),
    [({"base": "post"}, "post"), ({"base": "deepnorm"}, "residual_scale"),
     ({"base": "gpas"}, "gate"), ({"base": "hc"}, "another scheme"),
     ({"base": "nope"}, "unknown placement scheme"), ({"streams": 0}, "streams"),
     ({"streams": 2.0}, "streams")],
)
def test_hc_refuses_what_does_not_compose(options, message):
    with pytest.raises(ValueError, match=message):
        resolve_layout("hc", 2, **options)


def test_hc_composes_with_branch_side_schemes():
    assert resolve_placement("hc", 0, 2, base="peri").attn == ("pre", "branch_out")
    assert resolve_placement("hc", 1, 2, base="lns").input_scale == pytest.approx(2**-0.5)
    assert resolve_placement("hc", 0, 2, base="rezero").gates


def test_blocks_refuse_a_hidden_state_without_the_streams_axis():
    block = make_block(DIM, HEADS, scheme="hc", depth=2, streams=3)
    with pytest.raises(ValueError, match="3 streams"):
        block(torch.randn(2, 4, DIM))


def test_left_padding_does_not_reach_the_real_tokens():
    torch.manual_seed(0)
    model = Llama(LlamaConfig(vocab_size=32, block_size=8, depth=2, dim=DIM, heads=HEADS,
                              placement="hc", norm="rmsnorm"))
    idx = torch.randint(0, 32, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, :3] = False
    logits, _ = model(idx, mask=mask)
    changed = idx.clone()
    changed[1, :3] = (idx[1, :3] + 1) % 32
    torch.testing.assert_close(model(changed, mask=mask)[0][1, 3:], logits[1, 3:])
