"""Zero-centred ("offset") γ: y = norm(x) · (1 + w), w stored, initialized to 0, the 1 added in
float32; equal to `transformers`' GemmaRMSNorm, and read as γ = 1 + w by surgery."""

from __future__ import annotations

import pytest
import torch
from tests.norms.helpers import F64, perturbed

from normlab import GPT, GPTConfig, kernels, make_norm
from normlab.surgery import fold_norms, swap_norms

transformers = pytest.importorskip("transformers")
from transformers.models.gemma.modeling_gemma import GemmaRMSNorm  # noqa: E402

CPU_BACKENDS = ["reference", "torch", *(["cpp"] if kernels.cpu.available() else [])]


def gemma_pair(dim: int, dtype: torch.dtype, seed: int = 0):
    """A GemmaRMSNorm and normlab's zero-centred rmsnorm holding the same w, both in `dtype`."""
    torch.manual_seed(seed)
    theirs = GemmaRMSNorm(dim, eps=1e-6).to(dtype)
    with torch.no_grad():
        theirs.weight.normal_(0, 0.3)
    ours = make_norm("rmsnorm", dim, zero_centered_gamma=True, dtype=dtype)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


@pytest.mark.parametrize("name", ["rmsnorm", "layernorm"])
def test_weight_starts_at_zero_and_the_norm_at_the_plain_one(name):
    zc = make_norm(name, 12, zero_centered_gamma=True)
    assert torch.equal(zc.weight, torch.zeros(12)) and zc.weight_offset == 1.0
    assert "zero_centered_gamma=True" in repr(zc)
    x = torch.randn(3, 5, 12)
    torch.testing.assert_close(zc(x), make_norm(name, 12)(x), rtol=0, atol=0)
    plain = make_norm(name, 12, zero_centered_gamma=True, affine=False)
    assert plain.weight is None and plain.weight_offset == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_equals_gemma_rmsnorm_bit_for_bit_on_the_formula(dtype):
    # the reference backend runs the formula in Gemma's order: x·rsqrt(mean(x²) + eps) in
    # float32, times (1 + w) in float32, cast once
    theirs, ours = gemma_pair(64, dtype)
    x = (3 * torch.randn(4, 7, 64)).to(dtype)
    with kernels.use_backend("reference"):
        got = ours(x)
    assert got.dtype == dtype
    assert torch.equal(got, theirs(x))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_backend_equals_gemma_up_to_the_order_of_the_row_sum(backend, dtype):
    # the fused kernels sum x² in another order: rstd may differ in the last float32 bit, which
    # moves a bfloat16 output by one unit only where the float32 value sits on a rounding tie
    theirs, ours = gemma_pair(256, dtype)
    x = (3 * torch.randn(16, 256)).to(dtype)
    with kernels.use_backend(backend):
        got = ours(x)
    want = theirs(x)
    if dtype == torch.float32:  # a few units in the last place
        torch.testing.assert_close(got, want, rtol=4 * 2.0**-23, atol=0)
        return
    differ = got != want
    assert differ.float().mean() < 1e-3
    ulp = (want.float().abs() * 2.0**-7).clamp_min(2.0**-133)
    assert ((got.float() - want.float()).abs() <= ulp).all()


def test_the_one_is_added_in_float32():
    # w = 2⁻¹⁰ is a bfloat16 number, 1 + w is not (8 bits of mantissa): added in bfloat16 the
    # gain would round to 1 and the output would be the plain norm's
    norm = make_norm("rmsnorm", 16, zero_centered_gamma=True, dtype=torch.bfloat16)
    with torch.no_grad():
        norm.weight.fill_(2.0**-10)
    x = torch.randn(64, 16).to(torch.bfloat16)
    xf = x.float()
    expected = (xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + 1e-6)
                * (1 + 2.0**-10)).to(torch.bfloat16)
    with kernels.use_backend("reference"):
        torch.testing.assert_close(norm(x), expected, rtol=0, atol=0)
    plain = make_norm("rmsnorm", 16, dtype=torch.bfloat16)
    assert not torch.equal(norm(x), plain(x))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_layernorm_equals_torch_layernorm_with_gain_one_plus_w(backend):
    zc = perturbed("layernorm", 12, zero_centered_gamma=True)
    ln = torch.nn.LayerNorm(12, dtype=F64)
    with torch.no_grad():
        ln.weight.copy_(1 + zc.weight)
        ln.bias.copy_(zc.bias)
    x = torch.randn(5, 12, dtype=F64) * 2 + 1
    with kernels.use_backend(backend):
        torch.testing.assert_close(zc(x), ln(x))


@pytest.mark.parametrize("name", ["rmsnorm", "layernorm"])
def test_gradient_reaches_w_as_the_plain_gain_s(name):
    # dL/dw of the zero-centred norm is dL/dγ of the plain norm with γ = 1 + w
    zc = perturbed(name, 10, zero_centered_gamma=True)
    plain = make_norm(name, 10, dtype=F64)
    plain.load_state_dict({**zc.state_dict(), "weight": 1 + zc.weight.detach()})
    x, dy = torch.randn(2, 10, 2, dtype=F64).unbind(-1)
    zc(x).backward(dy)
    plain(x).backward(dy)
    torch.testing.assert_close(zc.weight.grad, plain.weight.grad)


# --- surgery reads γ = 1 + w -------------------------------------------------------------


def gemma_style_gpt() -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=37, block_size=16, depth=2, dim=32, heads=2, norm="rmsnorm",
                       norm_kwargs={"zero_centered_gamma": True})
    model = GPT(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if getattr(module, "weight_offset", 0.0):
                module.weight.normal_(0, 0.5)
    return model


def logits(model, idx):
    with torch.no_grad():
        return model(idx)[0]


def test_fold_moves_one_plus_w_into_the_readers():
    model = gemma_style_gpt()
    idx = torch.randint(0, 37, (2, 12), generator=torch.Generator().manual_seed(1))
    before = logits(model, idx)
    gain = 1 + model.final_norm.weight.detach().clone()
    head = model.lm_head.weight.detach().clone()
    model, report = fold_norms(model)
    torch.testing.assert_close(logits(model, idx), before, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.lm_head.weight, head * gain)
    assert model.final_norm.weight is None
    assert any("zero-centred" in change.detail for change in report.changes)


def test_swap_between_zero_centred_and_plain_carries_gamma():
    model = gemma_style_gpt()
    idx = torch.randint(0, 37, (2, 12), generator=torch.Generator().manual_seed(1))
    before = logits(model, idx)
    w = model.final_norm.weight.detach().clone()
    model, report = swap_norms(model, "rmsnorm")  # plain γ = 1 + w: the same function
    assert report.exact
    torch.testing.assert_close(model.final_norm.weight, 1 + w)
    torch.testing.assert_close(logits(model, idx), before, rtol=1e-5, atol=1e-6)
    model, report = swap_norms(model, "rmsnorm", zero_centered_gamma=True)  # and back: w
    assert report.exact
    torch.testing.assert_close(model.final_norm.weight, w, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits(model, idx), before, rtol=1e-5, atol=1e-6)


def test_swap_of_a_gemma_norm_keeps_its_stored_w():
    theirs, _ = gemma_pair(16, torch.float32)
    net = torch.nn.Sequential(theirs, torch.nn.Linear(16, 3))
    x = torch.randn(4, 16)
    before = net(x)
    net, report = swap_norms(net, "rmsnorm", zero_centered_gamma=True, probe=x)
    assert report.exact and net[0].weight_offset == 1.0
    torch.testing.assert_close(net[0].weight, theirs.weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(net(x), before, rtol=1e-5, atol=1e-6)
