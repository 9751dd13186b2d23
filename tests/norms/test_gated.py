"""The gated, grouped RMSNorm against a reference from the formula, both gate orders and
several group sizes; the gate as a keyword of the call; the required group size."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from tests.norms.helpers import F64, perturbed

from normlab import make_norm


def silu(v: float) -> float:
    return v / (1 + math.exp(-v))


def gated_reference(x, z, w, group_size, eps, norm_before_gate):
    """Token by token, group by group, from the formula (Mamba-2's `rms_norm_ref`)."""
    out = torch.empty_like(x)
    flat_x, flat_out = x.reshape(-1, x.shape[-1]), out.view(-1, x.shape[-1])
    flat_z = None if z is None else z.reshape(-1, x.shape[-1])
    for t, row in enumerate(flat_x.tolist()):
        gates = [1.0] * len(row) if flat_z is None else [silu(v) for v in flat_z[t].tolist()]
        u = row if norm_before_gate else [a * g for a, g in zip(row, gates, strict=True)]
        for start in range(0, len(row), group_size):
            part = u[start:start + group_size]
            rstd = 1 / math.sqrt(sum(v * v for v in part) / group_size + eps)
            for i in range(start, start + group_size):
                y = u[i] * rstd * w[i]
                flat_out[t, i] = y * gates[i] if norm_before_gate else y
    return out


@pytest.mark.parametrize("norm_before_gate", [False, True])
@pytest.mark.parametrize("group_size", [2, 6, 12])
def test_matches_formula(group_size, norm_before_gate):
    norm = perturbed("gatedrmsnorm", 12, group_size=group_size, norm_before_gate=norm_before_gate)
    x, z = (2 * torch.randn(2, 3, 12, dtype=F64)).unbind(0)
    w = norm.weight.tolist()
    expected = gated_reference(x, z, w, group_size, norm.eps, norm_before_gate)
    torch.testing.assert_close(norm(x, gate=z), expected)
    no_gate = gated_reference(x, None, w, group_size, norm.eps, norm_before_gate)
    torch.testing.assert_close(norm(x), no_gate)


def test_orders_and_group_sizes_are_different_functions():
    x, z = torch.randn(2, 4, 12, dtype=F64).unbind(0)
    outs = [make_norm("gatedrmsnorm", 12, group_size=g, norm_before_gate=o, dtype=F64)(x, gate=z)
            for g in (4, 12) for o in (False, True)]
    for i in range(len(outs)):
        for j in range(i):
            assert not torch.allclose(outs[i], outs[j])


def test_one_group_without_gate_is_rmsnorm():
    x = torch.randn(5, 12, dtype=F64)
    gated = make_norm("gatedrmsnorm", 12, group_size=12, eps=1e-6, dtype=F64)
    torch.testing.assert_close(gated(x), make_norm("rmsnorm", 12, dtype=F64)(x))


@pytest.mark.parametrize("norm_before_gate", [False, True])
def test_gradcheck_with_gate(norm_before_gate):
    norm = perturbed("gatedrmsnorm", 8, group_size=4, norm_before_gate=norm_before_gate)
    x, z = torch.randn(2, 2, 3, 8, dtype=F64).unbind(0)
    x.requires_grad_(True)
    z.requires_grad_(True)
    w = norm.weight.detach().clone().requires_grad_(True)

    def fn(x, z, w):
        fresh = copy.deepcopy(norm)
        return torch.func.functional_call(fresh, {"weight": w}, (x,), {"gate": z})

    assert torch.autograd.gradcheck(fn, (x, z, w), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_with_gate_use_float32(dtype):
    norm = perturbed("gatedrmsnorm", 16, group_size=8, dtype=torch.float32)
    x, z = (300 * torch.randn(2, 4, 16)).unbind(0)  # 300² overflows float16 statistics
    got = norm(x.to(dtype), gate=z.to(dtype))
    assert got.dtype == dtype and torch.isfinite(got).all()
    want = norm(x.to(dtype).float(), gate=z.to(dtype).float()).to(dtype).float()
    torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)


def test_group_size_is_required_and_checked():
    with pytest.raises(TypeError, match=r"missing required argument.*group_size"):
        make_norm("gatedrmsnorm", 12)
    for bad in (5, 0, -4, 2.0, True):
        with pytest.raises(ValueError, match="group_size"):
            make_norm("gatedrmsnorm", 12, group_size=bad)


def test_gate_is_checked():
    norm = make_norm("gatedrmsnorm", 8, group_size=4)
    x = torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match="gate must have x's shape"):
        norm(x, gate=torch.randn(2, 3, 4))
    with pytest.raises(TypeError, match="gate must be a floating-point tensor"):
        norm(x, gate=torch.ones(2, 3, 8, dtype=torch.long))
    with pytest.raises(TypeError, match="gate must be a floating-point tensor"):
        norm(x, gate=[1.0])
    assert "group_size=4, norm_before_gate=False" in repr(norm)
