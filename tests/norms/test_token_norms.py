"""LayerNorm, RMSNorm, pRMSNorm, CRMSNorm, ScaleNorm, identity: references and invariances."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.norms.helpers import F64, perturbed

from normlab import make_norm


# Independent references, written from the formulas with numpy-style loops over tokens.
def ref_layernorm(x, w, b, eps):
    out = torch.empty_like(x)
    for idx in range(x.shape[0]):
        v = x[idx]
        mu = sum(v.tolist()) / len(v)
        var = sum((e - mu) ** 2 for e in v.tolist()) / len(v)
        out[idx] = (v - mu) / math.sqrt(var + eps) * w + b
    return out


def ref_rms(x, w, eps, k=None, outside=False):
    out = torch.empty_like(x)
    for idx in range(x.shape[0]):
        v = x[idx]
        s = v[:k] if k else v
        ms = sum(e * e for e in s.tolist()) / len(s)
        denom = math.sqrt(ms) + eps if outside else math.sqrt(ms + eps)
        out[idx] = v / denom * w
    return out


def test_layernorm_matches_reference_and_torch():
    norm = perturbed("layernorm", 12)
    x = torch.randn(9, 12, dtype=F64) * 3 + 1
    torch.testing.assert_close(norm(x), ref_layernorm(x, norm.weight, norm.bias, 1e-5))
    torch_ln = torch.nn.LayerNorm(12, dtype=F64)
    torch_ln.load_state_dict(norm.state_dict())
    torch.testing.assert_close(norm(x), torch_ln(x))
    assert make_norm("layernorm", 12, bias=False).bias is None


@pytest.mark.parametrize("outside", [False, True])
def test_rmsnorm_matches_reference(outside):
    eps = 1e-3  # large enough that inside vs outside the root differ visibly
    norm = perturbed("rmsnorm", 10, eps=eps, eps_outside=outside)
    x = torch.randn(7, 10, dtype=F64) * 0.05
    torch.testing.assert_close(norm(x), ref_rms(x, norm.weight, eps, outside=outside))
    other = perturbed("rmsnorm", 10, eps=eps, eps_outside=not outside)
    assert not torch.allclose(norm(x), other(x))


def test_rmsnorm_matches_torch_rmsnorm():
    norm = perturbed("rmsnorm", 10)
    torch_rms = torch.nn.RMSNorm(10, eps=1e-6, dtype=F64)
    torch_rms.load_state_dict(norm.state_dict())
    x = torch.randn(4, 5, 10, dtype=F64)
    torch.testing.assert_close(norm(x), torch_rms(x))


def test_rmsnorm_bias_option():
    norm = perturbed("rmsnorm", 6, bias=True)
    x = torch.randn(3, 6, dtype=F64)
    torch.testing.assert_close(norm(x), ref_rms(x, norm.weight, 1e-6) + norm.bias)


def test_prmsnorm_uses_the_first_k_channels():
    norm = perturbed("prmsnorm", 32, p=0.25)
    assert norm.k == 8
    x = torch.randn(5, 32, dtype=F64)
    torch.testing.assert_close(norm(x), ref_rms(x, norm.weight, 1e-6, k=8))
    # Channels past k do not enter the statistic.
    y = x.clone()
    y[:, 8:] *= 100
    torch.testing.assert_close(norm(y)[:, :8], norm(x)[:, :8])
    assert make_norm("prmsnorm", 8).k == 1  # int(8 * 0.0625) = 0, floored at one channel
    with pytest.raises(ValueError, match="p must be in"):
        make_norm("prmsnorm", 8, p=0.0)


def test_crmsnorm_equals_rmsnorm_of_the_zero_mean_lift():
    d = 9
    crms = perturbed("crmsnorm", d - 1, affine=False)
    rms = make_norm("rmsnorm", d, affine=False, dtype=F64)
    x_tilde = torch.randn(6, d - 1, dtype=F64)
    lifted = torch.cat([x_tilde, -x_tilde.sum(-1, keepdim=True)], -1)
    torch.testing.assert_close(lifted.mean(-1), torch.zeros(6, dtype=F64))
    torch.testing.assert_close(crms(x_tilde), rms(lifted)[:, : d - 1])


def test_scalenorm_formula_and_init():
    norm = make_norm("scalenorm", 16, dtype=F64)
    assert norm.gain.item() == pytest.approx(4.0)  # sqrt(D)
    x = torch.randn(3, 16, dtype=F64)
    expected = 4.0 * x / x.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(norm(x), expected)
    tiny = torch.full((1, 16), 1e-9, dtype=F64)
    torch.testing.assert_close(norm(tiny), 4.0 * tiny / 1e-5)  # eps floors the norm
    assert not make_norm("scalenorm", 16, affine=False).gain.requires_grad


def test_identity_is_identity():
    x = torch.randn(2, 3, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default fits any norm slot silently
        norm = make_norm("identity", 5, eps=1e-5, affine=False)
    assert torch.equal(norm(x), x)
    assert list(norm.parameters()) == [] and list(norm.buffers()) == []


def test_identity_warns_that_affine_is_ignored():
    with pytest.warns(UserWarning, match="identity: affine=True is ignored"):
        norm = make_norm("identity", 5, affine=True)
    assert norm.affine is False and list(norm.parameters()) == []


def test_identity_eval_affine_device_and_dtype():
    scale, shift = make_norm("identity", 4).eval_affine()
    assert torch.equal(scale, torch.ones(4)) and torch.equal(shift, torch.zeros(4))
    assert scale.dtype == torch.get_default_dtype() and scale.device.type == "cpu"
    scale, shift = make_norm("identity", 4).eval_affine(device="cpu", dtype=F64)
    assert scale.dtype == shift.dtype == F64
    assert torch.equal(scale, torch.ones(4, dtype=F64))


vectors = st.lists(st.floats(-50, 50, allow_nan=False, width=64), min_size=4, max_size=24)
scales = st.floats(0.01, 100)
shifts = st.floats(-100, 100)


@settings(max_examples=60, deadline=None)
@given(vectors, scales, shifts)
def test_layernorm_is_shift_and_scale_invariant(values, a, c):
    x = torch.tensor(values, dtype=F64)[None]
    if x.std() < 1e-3:
        return  # nearly constant vectors are dominated by eps, where no invariance holds
    norm = make_norm("layernorm", x.shape[-1], eps=0.0, dtype=F64)
    torch.testing.assert_close(norm(a * x + c), norm(x), atol=1e-8, rtol=1e-7)


@settings(max_examples=60, deadline=None)
@given(vectors, scales)
def test_rmsnorm_is_scale_invariant(values, a):
    x = torch.tensor(values, dtype=F64)[None]
    if x.abs().max() < 1e-3:
        return
    for name in ("rmsnorm", "scalenorm", "crmsnorm"):
        norm = make_norm(name, x.shape[-1], eps=0.0, dtype=F64)
        torch.testing.assert_close(norm(a * x), norm(x), atol=1e-8, rtol=1e-7)


@settings(max_examples=60, deadline=None)
@given(vectors)
def test_crmsnorm_lift_property(values):
    x_tilde = torch.tensor(values, dtype=F64)[None]
    d = x_tilde.shape[-1] + 1
    lifted = torch.cat([x_tilde, -x_tilde.sum(-1, keepdim=True)], -1)
    crms = make_norm("crmsnorm", d - 1, dtype=F64)
    rms = make_norm("rmsnorm", d, dtype=F64)
    ln = make_norm("layernorm", d, eps=1e-6, dtype=F64)
    torch.testing.assert_close(crms(x_tilde), rms(lifted)[:, :-1])
    # On a zero-mean vector LayerNorm and RMSNorm coincide (the Pre-RMSNorm argument).
    torch.testing.assert_close(ln(lifted), rms(lifted), atol=1e-9, rtol=1e-7)
