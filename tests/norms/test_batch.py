"""BatchNorm, RepBN, PRepBN and BCN: references from the formulas, torch parity, schedule."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from tests.norms.helpers import F64, perturbed, random_mask
from torch.func import functional_call

from normlab import make_norm
from normlab.norms.prepbn import PRepBN

# ---------------------------------------------------------------------------------------------
# Independent references, written from the formulas (per channel, with explicit sums).
# ---------------------------------------------------------------------------------------------


def ref_moments(x, mask=None):
    """Per-channel mean, biased variance and count over the real tokens of x (..., C)."""
    rows = x.reshape(-1, x.shape[-1])
    if mask is not None:
        rows = rows[mask.reshape(-1)]
    n = rows.shape[0]
    mean = rows.sum(0) / n
    var = ((rows - mean) ** 2).sum(0) / n
    return mean, var, n


def ref_bn_train(x, mask, w, b, eps):
    mean, var, _ = ref_moments(x, mask)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def ref_running(rm, rv, x, mask, momentum):
    mean, var, n = ref_moments(x, mask)
    return (1 - momentum) * rm + momentum * mean, (1 - momentum) * rv + momentum * var * n / (n - 1)


def ref_bn_eval(x, rm, rv, w, b, eps):
    return (x - rm) / torch.sqrt(rv + eps) * w + b


def ref_layernorm(x, w, b, eps):
    mean = x.sum(-1, keepdim=True) / x.shape[-1]
    var = ((x - mean) ** 2).sum(-1, keepdim=True) / x.shape[-1]
    return (x - mean) / torch.sqrt(var + eps) * w + b


def ref_group(z, groups, gw, gb, eps):
    """Per token: each block of C/G consecutive channels normalized, then w_g·(·) + b_g."""
    out = torch.empty_like(z)
    size = z.shape[-1] // groups
    for g in range(groups):
        block = z[..., g * size:(g + 1) * size]
        mean = block.sum(-1, keepdim=True) / size
        var = ((block - mean) ** 2).sum(-1, keepdim=True) / size
        out[..., g * size:(g + 1) * size] = (block - mean) / torch.sqrt(var + eps) * gw[g] + gb[g]
    return out


# ---------------------------------------------------------------------------------------------
# BatchNorm
# ---------------------------------------------------------------------------------------------


def test_batchnorm_equals_torch_batchnorm1d_train_and_eval():
    norm = perturbed("batchnorm", 6)
    ref = torch.nn.BatchNorm1d(6, dtype=F64)
    with torch.no_grad():
        ref.weight.copy_(norm.weight)
        ref.bias.copy_(norm.bias)
    for step in range(3):
        x = (torch.randn(10, 6, dtype=F64) * (step + 1) + step).requires_grad_(True)
        x_ref = x.detach().clone().requires_grad_(True)
        y, y_ref = norm(x), ref(x_ref)
        torch.testing.assert_close(y, y_ref)
        g = torch.randn_like(y)
        y.backward(g)
        y_ref.backward(g)
        torch.testing.assert_close(x.grad, x_ref.grad)
        torch.testing.assert_close(norm.weight.grad, ref.weight.grad)
        torch.testing.assert_close(norm.bias.grad, ref.bias.grad)
        torch.testing.assert_close(norm.running_mean, ref.running_mean)
        torch.testing.assert_close(norm.running_var, ref.running_var)
    norm.eval()
    ref.eval()
    x = torch.randn(4, 6, dtype=F64)
    torch.testing.assert_close(norm(x), ref(x))
    torch.testing.assert_close(norm(x[:1]), ref(x[:1]))  # eval with a single token


def test_batchnorm_flattens_leading_axes_like_torch():
    norm = make_norm("batchnorm", 5, dtype=F64, momentum=0.3)
    ref = torch.nn.BatchNorm1d(5, dtype=F64, momentum=0.3)
    x = torch.randn(2, 3, 4, 5, dtype=F64)
    torch.testing.assert_close(norm(x), ref(x.reshape(-1, 5)).reshape(x.shape))
    torch.testing.assert_close(norm.running_var, ref.running_var)


def test_batchnorm_masked_matches_reference():
    norm = perturbed("batchnorm", 7, momentum=0.2)
    x = torch.randn(3, 5, 7, dtype=F64) * 2 + 1
    mask = random_mask((3, 5))
    rm, rv = norm.running_mean.clone(), norm.running_var.clone()
    y = norm(x, mask=mask)
    expected = ref_bn_train(x, mask, norm.weight.detach(), norm.bias.detach(), 1e-5)
    torch.testing.assert_close(y[mask], expected[mask])
    exp_rm, exp_rv = ref_running(rm, rv, x, mask, 0.2)
    torch.testing.assert_close(norm.running_mean, exp_rm)
    torch.testing.assert_close(norm.running_var, exp_rv)
    # The same as torch's BatchNorm1d on the real rows alone.
    ref = torch.nn.BatchNorm1d(7, dtype=F64, momentum=0.2)
    with torch.no_grad():
        ref.weight.copy_(norm.weight)
        ref.bias.copy_(norm.bias)
    torch.testing.assert_close(y[mask], ref(x[mask]))
    torch.testing.assert_close(norm.running_var, ref.running_var)


def test_batchnorm_eval_uses_running_stats_and_leaves_them():
    norm = perturbed("batchnorm", 4)
    for _ in range(2):
        norm(torch.randn(8, 4, dtype=F64) * 3 - 1)
    norm.eval()
    rm, rv = norm.running_mean.clone(), norm.running_var.clone()
    x = torch.randn(2, 3, 4, dtype=F64)
    expected = ref_bn_eval(x, rm, rv, norm.weight.detach(), norm.bias.detach(), 1e-5)
    torch.testing.assert_close(norm(x), expected)
    torch.testing.assert_close(norm(x, mask=random_mask((2, 3))), expected)
    assert torch.equal(norm.running_mean, rm) and torch.equal(norm.running_var, rv)


def test_batchnorm_without_affine():
    norm = make_norm("batchnorm", 4, affine=False, dtype=F64)
    assert norm.weight is None and norm.bias is None
    x = torch.randn(6, 4, dtype=F64)
    torch.testing.assert_close(norm(x), ref_bn_train(x, None, 1.0, 0.0, 1e-5))


def test_batchnorm_too_few_real_tokens_in_training_raises():
    norm = make_norm("batchnorm", 4)
    with pytest.raises(ValueError, match="at least 2 real tokens"):
        norm(torch.randn(1, 4))
    x = torch.randn(2, 3, 4)
    one_real = torch.zeros(2, 3, dtype=torch.bool)
    one_real[1, 2] = True
    with pytest.raises(ValueError, match="at least 2 real tokens"):
        norm(x, mask=one_real)
    with pytest.raises(ValueError, match="all False"):
        norm(x, mask=torch.zeros(2, 3, dtype=torch.bool))
    norm.eval()
    assert norm(torch.randn(1, 4)).shape == (1, 4)


@pytest.mark.parametrize("name", ["batchnorm", "repbn", "bcn"])
def test_bad_momentum_raises(name):
    with pytest.raises(ValueError, match="momentum must be in"):
        make_norm(name, 8, momentum=1.5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["batchnorm", "repbn", "prepbn", "bcn"])
def test_half_inputs_keep_fp32_running_stats(name, dtype):
    norm = make_norm(name, 32)
    x = torch.randn(4, 6, 32) * 400  # x² overflows fp16
    ref = copy.deepcopy(norm)
    y = norm(x.to(dtype))
    ref(x.to(dtype).float())
    assert y.dtype == dtype and torch.isfinite(y).all()
    bn, bn_ref = (norm.norm2, ref.norm2) if name == "prepbn" else (norm, ref)
    assert bn.running_var.dtype == torch.float32
    torch.testing.assert_close(bn.running_var, bn_ref.running_var)


# ---------------------------------------------------------------------------------------------
# RepBN
# ---------------------------------------------------------------------------------------------


def test_repbn_is_batchnorm_plus_alpha_x():
    norm = perturbed("repbn", 6)
    x = torch.randn(3, 4, 6, dtype=F64)
    mask = random_mask((3, 4))
    w, b, alpha = norm.weight.detach(), norm.bias.detach(), norm.alpha.detach()
    expected = ref_bn_train(x, mask, w, b, 1e-5) + alpha * x
    torch.testing.assert_close(norm(x, mask=mask)[mask], expected[mask])
    norm.eval()
    expected = ref_bn_eval(x, norm.running_mean, norm.running_var, w, b, 1e-5) + alpha * x
    torch.testing.assert_close(norm(x), expected)


def test_repbn_inits():
    vision = make_norm("repbn", 8)
    assert vision.alpha.shape == () and vision.alpha.item() == 1.0
    assert torch.equal(vision.weight, torch.ones(8)) and torch.equal(vision.bias, torch.zeros(8))
    llm = make_norm("repbn", 8, alpha_init=0.0, bn_weight_init=0.0)
    assert llm.alpha.item() == 0.0
    assert torch.equal(llm.weight, torch.zeros(8)) and torch.equal(llm.bias, torch.zeros(8))
    x = torch.randn(4, 8)
    assert torch.equal(llm(x), torch.zeros_like(x))  # the LLM init starts as the zero map
    llm(x).sum().backward()
    assert llm.alpha.grad is not None and llm.alpha.grad.abs() > 0
    with pytest.raises(ValueError, match="needs affine=True"):
        make_norm("repbn", 8, affine=False, bn_weight_init=0.0)


@pytest.mark.parametrize("name", ["batchnorm", "repbn", "prepbn"])
def test_eval_affine_formula_and_equality(name):
    norm = perturbed(name, 6, **({"step": 2} if name == "prepbn" else {}))  # λ = 0 after 3 calls
    for _ in range(3):
        norm(torch.randn(5, 6, dtype=F64) * 2 + 0.5)
    norm.eval()
    scale, shift = norm.eval_affine()
    bn = norm.norm2 if name == "prepbn" else norm
    inv = 1 / torch.sqrt(bn.running_var + 1e-5)
    alpha = bn.alpha.detach() if name != "batchnorm" else 0.0
    torch.testing.assert_close(scale, bn.weight.detach() * inv + alpha)
    torch.testing.assert_close(shift, bn.bias.detach() - bn.weight.detach() * bn.running_mean * inv)
    x = torch.randn(2, 3, 6, dtype=F64)
    torch.testing.assert_close(norm(x), scale * x + shift)


# ---------------------------------------------------------------------------------------------
# PRepBN
# ---------------------------------------------------------------------------------------------


def lam_schedule(calls, warm, step, r0, per_tick=1):
    """λ of the official schedule at a 0-based training call index (None = warm phase)."""
    tick = calls // per_tick
    if tick < warm:
        return None
    return r0 * max(step - (tick - warm), 0) / step


def test_lam_schedule_reference_values():
    # Spot values of the reference itself: warm 2, step 4 gives warm, warm, 1, .75, .5, .25, 0.
    got = [lam_schedule(c, 2, 4, 1.0) for c in range(8)]
    assert got == [None, None, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]


@pytest.mark.parametrize("warm,step,r0,per_tick", [(2, 4, 1.0, 1), (0, 3, 0.5, 1), (1, 2, 1.0, 2)])
def test_prepbn_schedule_outputs(warm, step, r0, per_tick):
    norm = perturbed("prepbn", 6, warm=warm, step=step, r0=r0, calls_per_tick=per_tick)
    ln, bn = norm.norm1, norm.norm2
    ln_w, ln_b = ln.weight.detach(), ln.bias.detach()
    gen = torch.Generator().manual_seed(5)
    for call in range(per_tick * (warm + step + 2)):
        x = torch.randn(3, 4, 6, generator=gen, dtype=F64) + 0.5
        expected_lam = lam_schedule(call, warm, step, r0, per_tick)
        assert norm.lam == pytest.approx(1.0 if expected_lam is None else expected_lam)
        rm, rv = bn.running_mean.clone(), bn.running_var.clone()
        y = norm(x)
        ln_out = ref_layernorm(x, ln_w, ln_b, 1e-6)
        if expected_lam is None:
            torch.testing.assert_close(y, ln_out)
            assert torch.equal(bn.running_mean, rm) and torch.equal(bn.running_var, rv)
            continue
        rep = ref_bn_train(x, None, bn.weight.detach(), bn.bias.detach(), 1e-5)
        rep = rep + bn.alpha.detach() * x
        torch.testing.assert_close(y, expected_lam * ln_out + (1 - expected_lam) * rep)
        exp_rm, exp_rv = ref_running(rm, rv, x, None, 0.1)
        torch.testing.assert_close(bn.running_mean, exp_rm)
        torch.testing.assert_close(bn.running_var, exp_rv)
    assert norm.lam == 0.0
    assert int(norm.calls) == per_tick * (warm + step + 2)


def test_prepbn_eval_is_repbn_and_does_not_count():
    norm = perturbed("prepbn", 6, step=2)
    for _ in range(3):
        norm(torch.randn(4, 6, dtype=F64))
    calls = int(norm.calls)
    norm.eval()
    x = torch.randn(2, 3, 6, dtype=F64)
    repbn = make_norm("repbn", 6, dtype=F64).eval()
    repbn.load_state_dict(norm.norm2.state_dict())
    torch.testing.assert_close(norm(x), repbn(x))
    bn = norm.norm2
    expected = ref_bn_eval(x, bn.running_mean, bn.running_var, bn.weight.detach(),
                           bn.bias.detach(), 1e-5) + bn.alpha.detach() * x
    torch.testing.assert_close(norm(x), expected)
    assert int(norm.calls) == calls


def test_prepbn_state_dict_round_trip_mid_schedule():
    kw = dict(warm=1, step=5, dtype=F64)
    trained = make_norm("prepbn", 6, **kw)
    for _ in range(3):
        trained(torch.randn(4, 6, dtype=F64))
    assert 0 < trained.lam < 1
    sd = trained.state_dict()
    assert "calls" in sd and int(sd["calls"]) == 3
    restored = make_norm("prepbn", 6, **kw)
    restored.load_state_dict(sd)
    assert restored.lam == trained.lam == pytest.approx(3 / 5)
    x = torch.randn(3, 6, dtype=F64)
    torch.testing.assert_close(restored(x), trained(x))
    assert restored.lam == trained.lam == pytest.approx(2 / 5)
    assert int(restored.calls) == int(trained.calls) == 4


def test_prepbn_warns_when_eval_before_lam_reaches_zero():
    fresh = make_norm("prepbn", 4, step=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh.eval()  # never trained: nothing to mismatch
    norm = make_norm("prepbn", 4, step=2)
    norm(torch.randn(3, 4))
    with pytest.warns(UserWarning, match="does not match training"):
        torch.nn.Sequential(norm).eval()
    norm.train()
    norm(torch.randn(3, 4))
    norm(torch.randn(3, 4))
    assert norm.lam == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        norm.eval()


def test_prepbn_rmsnorm_first_norm_and_llm_init():
    norm = make_norm("prepbn", 8, norm1="rmsnorm", alpha_init=0.0, bn_weight_init=0.0, dtype=F64)
    assert type(norm.norm1).name == "rmsnorm" and norm.norm1.eps == 1e-6
    x = torch.randn(3, 8, dtype=F64)
    rms = x / torch.sqrt((x**2).sum(-1, keepdim=True) / 8 + 1e-6)
    torch.testing.assert_close(norm(x), rms)  # λ = 1 at the first call and RepBN outputs 0
    assert isinstance(norm, PRepBN) and norm.info.fold == "op" and norm.info.has_running_stats


@pytest.mark.parametrize("bad", [dict(step=0), dict(warm=-1), dict(r0=-0.1),
                                 dict(calls_per_tick=0), dict(warm=1.5)])
def test_prepbn_bad_schedule_raises(bad):
    with pytest.raises(ValueError, match="prepbn"):
        make_norm("prepbn", 8, **bad)


# ---------------------------------------------------------------------------------------------
# BCN
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim,groups,expected", [(64, None, 32), (48, None, 24), (12, None, 6),
                                                 (16, None, 8), (48, 16, 16), (7, None, 1)])
def test_bcn_group_count(dim, groups, expected):
    """The default is 32 lowered to a divisor of C with at least two channels per group."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        norm = make_norm("bcn", dim, groups=groups)
    assert norm.groups == expected
    assert norm.group_weight.shape == norm.group_bias.shape == (expected,)
    assert torch.equal(norm.group_weight, torch.ones(expected))
    assert torch.equal(norm.group_bias, torch.zeros(expected))


def test_bcn_explicit_groups_warn_when_lowered_or_one_channel():
    with pytest.warns(UserWarning, match="does not divide"):
        norm = make_norm("bcn", 48, groups=10)
    assert norm.groups == 8
    with pytest.warns(UserWarning, match="one channel per group"):
        assert make_norm("bcn", 12, groups=12).groups == 12
    with pytest.raises(ValueError, match="groups must be a positive int"):
        make_norm("bcn", 48, groups=0)


def test_bcn_default_groups_keep_the_input_at_small_widths():
    """With one channel per group every token would come out as the group bias alone."""
    for dim in (4, 12, 32):
        norm = perturbed("bcn", dim)
        x = torch.randn(3, 5, dim, dtype=F64)
        for mode in ("train", "eval"):
            getattr(norm, mode)()
            y = norm(x)
            spread = (y - y.mean((0, 1))).abs().amax((0, 1))  # per channel, over tokens
            assert (spread > 0.1).all(), f"dim={dim} {mode}: a channel is constant over tokens"


def test_bcn_matches_reference_train_and_eval():
    norm = perturbed("bcn", 12, groups=4)
    x = torch.randn(3, 5, 12, dtype=F64) * 2 + 1
    mask = random_mask((3, 5))
    w, b = norm.weight.detach(), norm.bias.detach()
    gw, gb = norm.group_weight.detach(), norm.group_bias.detach()
    expected = ref_group(ref_bn_train(x, mask, w, b, 1e-5), 4, gw, gb, 1e-5)
    torch.testing.assert_close(norm(x, mask=mask)[mask], expected[mask])
    norm.eval()
    z = ref_bn_eval(x, norm.running_mean, norm.running_var, w, b, 1e-5)
    torch.testing.assert_close(norm(x), ref_group(z, 4, gw, gb, 1e-5))


def test_bcn_group_part_is_per_token():
    """In eval every token is normalized alone: other tokens of its sequence do not matter."""
    norm = perturbed("bcn", 8, groups=2)
    norm(torch.randn(6, 8, dtype=F64))
    norm.eval()
    x = torch.randn(2, 5, 8, dtype=F64)
    y = norm(x)
    x2 = x.clone()
    x2[:, 1:] = 100 * torch.randn_like(x2[:, 1:])
    torch.testing.assert_close(norm(x2)[:, 0], y[:, 0])
    # Undoing the group affine leaves every group of every token with mean 0 and variance ≈ 1.
    groups = (y - norm.group_bias.repeat_interleave(4)) / norm.group_weight.repeat_interleave(4)
    groups = groups.detach().unflatten(-1, (2, 4))
    torch.testing.assert_close(groups.mean(-1), torch.zeros(2, 5, 2, dtype=F64))
    var = groups.var(-1, unbiased=False)
    torch.testing.assert_close(var, torch.ones_like(var), atol=1e-3, rtol=0)


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,kw", [("batchnorm", {}), ("repbn", {}), ("bcn", {"groups": 2}),
                                     ("prepbn", {"step": 4}),
                                     ("prepbn", {"norm1": "rmsnorm", "step": 4})])
def test_gradcheck_training_path_fp64(name, kw):
    norm = perturbed(name, 6, **kw)
    if name == "prepbn":
        norm(torch.randn(4, 6, dtype=F64))  # λ = 0.75: both norms in the graph
    x = torch.randn(2, 3, 6, dtype=F64, requires_grad=True)
    mask = random_mask((2, 3))
    names = [n for n, _ in norm.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in norm.parameters()]

    def fn(x, *values):
        fresh = copy.deepcopy(norm)  # running stats and counters stay put between evaluations
        return functional_call(fresh, dict(zip(names, values, strict=True)), (x,), {"mask": mask})

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-5)
