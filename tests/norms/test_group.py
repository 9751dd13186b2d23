"""GroupNorm, EvoNorm-S0 and EvoNorm-B0 against torch.nn.GroupNorm and the papers' formulas."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from tests.norms.helpers import F64, perturbed, random_mask

from normlab import make_norm


def group_var(x, groups):
    """Biased variance of each token's channel groups, repeated over the group's channels."""
    xg = x.reshape(*x.shape[:-1], groups, -1)
    var = xg.var(-1, correction=0, keepdim=True)
    return var.expand_as(xg).reshape(x.shape)


# --- GroupNorm ------------------------------------------------------------------------------


@pytest.mark.parametrize(("dim", "groups"), [(64, None), (33, None), (12, 3), (8, 2), (6, 1)])
def test_groupnorm_equals_torch_groupnorm(dim, groups):
    kw = {} if groups is None else {"groups": groups}
    norm = perturbed("groupnorm", dim, **kw)
    ref = torch.nn.GroupNorm(norm.groups, dim, dtype=F64)
    ref.load_state_dict({"weight": norm.weight, "bias": norm.bias})
    x = 3 * torch.randn(2, 5, dim, dtype=F64) + 1
    torch.testing.assert_close(norm(x), ref(x.reshape(-1, dim)).reshape(x.shape))


@pytest.mark.parametrize(("dim", "expected"), [(64, 32), (512, 32), (48, 24), (33, 11),
                                               (16, 8), (7, 1), (1, 1)])
def test_default_groups_divide_dim(dim, expected):
    for name in ("groupnorm", "evonorm_s0"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # lowering the default is silent
            assert make_norm(name, dim).groups == expected


@pytest.mark.parametrize("name", ["groupnorm", "evonorm_s0"])
def test_explicit_groups(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_norm(name, 16, groups=4).groups == 4
        assert make_norm(name, 16, groups=8).groups == 8
    with pytest.warns(UserWarning, match="groups=5 does not divide dim=16; using 4"):
        assert make_norm(name, 16, groups=5).groups == 4
    with pytest.warns(UserWarning, match="groups=16 leaves one channel per group of dim=16"):
        assert make_norm(name, 16, groups=16).groups == 16  # honoured, but every group is flat
    for bad in (0, -2, 2.0, True):
        with pytest.raises(ValueError, match="groups must be a positive int"):
            make_norm(name, 16, groups=bad)


# --- EvoNorm-S0 -----------------------------------------------------------------------------


@pytest.mark.parametrize(("dim", "groups"), [(16, 4), (33, None)])
def test_evonorm_s0_matches_formula(dim, groups):
    kw = {} if groups is None else {"groups": groups}
    norm = perturbed("evonorm_s0", dim, **kw)
    assert norm.eps == 1e-5
    x = 2 * torch.randn(3, 4, dim, dtype=F64) - 0.5
    var = group_var(x, norm.groups)
    expected = x * torch.sigmoid(norm.v * x) / torch.sqrt(var + 1e-5) * norm.weight + norm.bias
    torch.testing.assert_close(norm(x), expected)


def test_evonorm_s0_init_and_causality():
    norm = make_norm("evonorm_s0", 8)
    assert torch.equal(norm.v, torch.ones(8)) and norm.info.fold == "none"
    x = torch.randn(1, 6, 8)
    y = x.clone()
    y[0, 4:] = 100 * torch.randn(2, 8)  # change later tokens only
    torch.testing.assert_close(norm(y)[0, :4], norm(x)[0, :4], rtol=0, atol=0)


# --- EvoNorm-B0 -----------------------------------------------------------------------------


def b0_reference(x, mask, v, var, weight, bias, eps=1e-5):
    """y = x / max(sqrt(var + eps), v·x + sqrt(var_s + eps)) · γ + β, var_s per sample (axis -2)
    over its real tokens, computed with a loop over samples."""
    y = torch.empty_like(x)
    for b in range(x.shape[0]):
        real = x[b][mask[b]]
        inst = real.var(0, correction=0) if len(real) else torch.zeros_like(var)
        denom = torch.maximum(torch.sqrt(var + eps), v * x[b] + torch.sqrt(inst + eps))
        y[b] = x[b] / denom * weight + bias
    return y


def test_evonorm_b0_train_matches_formula_and_excludes_padding():
    norm = perturbed("evonorm_b0", 8).train()
    x = 2 * torch.randn(3, 6, 8, dtype=F64) + 0.3
    mask = random_mask((3, 6))
    batch_var = x[mask].var(0, correction=0)
    expected = b0_reference(x, mask, norm.v, batch_var, norm.weight, norm.bias)
    garbage = torch.where(mask[..., None], x, 1e4 * torch.randn_like(x))
    out = copy.deepcopy(norm)(garbage, mask=mask)
    torch.testing.assert_close(out[mask], expected[mask])
    # Without a mask every token is real.
    full = b0_reference(x, torch.ones(3, 6, dtype=torch.bool), norm.v,
                        x.reshape(-1, 8).var(0, correction=0), norm.weight, norm.bias)
    torch.testing.assert_close(copy.deepcopy(norm)(x), full)


def test_evonorm_b0_running_var_is_a_biased_ema_of_real_tokens():
    norm = make_norm("evonorm_b0", 8, dtype=F64).train()
    assert norm.momentum == 0.1 and norm.eps == 1e-5
    assert torch.equal(norm.running_var, torch.ones(8, dtype=F64))
    expected = torch.ones(8, dtype=F64)
    for seed in range(3):
        torch.manual_seed(seed)
        x = 3 * torch.randn(2, 3, 8, dtype=F64)
        mask = random_mask((2, 3), seed=seed)
        garbage = torch.where(mask[..., None], x, 1e4)
        norm(garbage, mask=mask)
        n = int(mask.sum())
        biased = x[mask].var(0, correction=0)
        unbiased_alternative = 0.9 * expected + 0.1 * biased * n / (n - 1)  # timm's update
        expected = 0.9 * expected + 0.1 * biased
        torch.testing.assert_close(norm.running_var, expected)
        assert not torch.allclose(norm.running_var, unbiased_alternative)


def test_evonorm_b0_eval_uses_running_var_and_other_samples_do_not_matter():
    norm = perturbed("evonorm_b0", 8)
    with torch.no_grad():
        norm.running_var.copy_(torch.rand(8, dtype=F64) * 3 + 0.1)
    norm.eval()
    before = norm.running_var.clone()
    x = torch.randn(3, 5, 8, dtype=F64)
    mask = random_mask((3, 5))
    out = norm(x, mask=mask)
    assert torch.equal(norm.running_var, before)
    expected = b0_reference(x, mask, norm.v, before, norm.weight, norm.bias)
    torch.testing.assert_close(out[mask], expected[mask])
    alone = norm(x[1:2], mask=mask[1:2])
    torch.testing.assert_close(alone, out[1:2], rtol=0, atol=0)


def test_evonorm_b0_instance_statistic_sees_the_whole_sequence():
    """Documented leakage: a later token of the same sample changes an earlier token's output."""
    norm = make_norm("evonorm_b0", 8).eval()
    torch.manual_seed(4)
    x = torch.randn(1, 6, 8).abs()  # v·x > 0 so the instance branch of max() is active
    y = x.clone()
    y[0, -1] = 50.0
    assert not torch.allclose(norm(y)[0, :-1], norm(x)[0, :-1])


def test_evonorm_b0_shapes():
    norm = perturbed("evonorm_b0", 8).eval()
    x = torch.randn(5, 8, dtype=F64)  # 2-D: one sample of 5 tokens
    torch.testing.assert_close(norm(x), norm(x[None])[0])
    torch.testing.assert_close(norm(x[0]), norm(x[:1]).squeeze(0))  # 1-D: a single token
    x4 = torch.randn(2, 3, 4, 8, dtype=F64)  # every axis before -2 indexes samples
    torch.testing.assert_close(norm(x4), norm(x4.reshape(6, 4, 8)).reshape(x4.shape))
    with pytest.raises(ValueError, match="momentum"):
        make_norm("evonorm_b0", 8, momentum=1.5)
    with pytest.raises(ValueError, match="at least one real token"):
        norm.train()(x[None], mask=torch.zeros(1, 5, dtype=torch.bool))


# --- gradients ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["groupnorm", "evonorm_s0", "evonorm_b0"])
def test_gradcheck_fp64(name):
    norm = perturbed(name, 8, groups=4) if name != "evonorm_b0" else perturbed(name, 8)
    x = torch.randn(2, 3, 8, dtype=F64, requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, False, True]])

    def fn(x):
        return copy.deepcopy(norm).train()(x, mask=mask)

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradcheck(lambda x: copy.deepcopy(norm).eval()(x), (x,))
