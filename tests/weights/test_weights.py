"""Weight-side normalizations: Weight Standardization, FixNorm, NaP and the torch helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import normlab.weights as W
from normlab.weights import (
    NormProjection,
    UnitRows,
    WeightStandardization,
    apply_spectral_norm,
    apply_weight_norm,
    fix_norm,
    weight_matrices,
    weight_standardize,
)

F64 = torch.float64


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 8)
        self.conv = nn.Conv1d(8, 6, 3)
        self.fc1 = nn.Linear(8, 16)
        self.ln = nn.LayerNorm(16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):  # x: (B, T, 8)
        h = self.conv(x.transpose(1, 2)).transpose(1, 2)  # (B, T-2, 6)
        return self.fc2(torch.relu(self.ln(self.fc1(x)))), h


def standardized_reference(w, eps=1e-5):
    """(W_o - mean) / sqrt(unbiased var + eps) over every axis but the output one."""
    flat = w.reshape(w.shape[0], -1)
    mean = flat.mean(1, keepdim=True)
    var = ((flat - mean) ** 2).sum(1, keepdim=True) / (flat.shape[1] - 1)
    return ((flat - mean) / torch.sqrt(var + eps)).reshape(w.shape)


def test_public_names():
    assert set(W.__all__) >= {"weight_standardize", "fix_norm", "NormProjection",
                              "apply_weight_norm", "apply_spectral_norm"}
    for name in W.__all__:
        assert hasattr(W, name)


# --- Weight Standardization ----------------------------------------------------------------


def test_weight_standardization_linear_rows():
    torch.manual_seed(0)
    lin = nn.Linear(12, 5, dtype=F64)
    with torch.no_grad():
        lin.weight.mul_(7).add_(torch.arange(5, dtype=F64)[:, None])  # non-zero row means
    raw = lin.weight.detach().clone()
    assert weight_standardize(lin) == [""]
    w = lin.weight
    torch.testing.assert_close(w, standardized_reference(raw))
    torch.testing.assert_close(w.mean(1), torch.zeros(5, dtype=F64))
    var = raw.var(1)
    torch.testing.assert_close(w.var(1), var / (var + 1e-5))  # unit variance up to eps
    x = torch.randn(3, 12, dtype=F64)
    torch.testing.assert_close(lin(x), x @ standardized_reference(raw).T + lin.bias)
    assert torch.equal(lin.parametrizations.weight.original, raw)


def test_weight_standardization_conv_over_in_and_kernel():
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 4, 3, dtype=F64)
    raw = conv.weight.detach().clone()
    weight_standardize(conv, eps=1e-3)
    torch.testing.assert_close(conv.weight, standardized_reference(raw, eps=1e-3))
    torch.testing.assert_close(conv.weight.mean((1, 2, 3)), torch.zeros(4, dtype=F64))


def test_weight_standardize_selects_and_refuses():
    model = Tiny()
    names = weight_standardize(model)
    assert names == ["conv", "fc1", "fc2"]
    assert not parametrize.is_parametrized(model.emb)
    with pytest.raises(ValueError, match="already weight-standardized"):
        weight_standardize(model.fc1)
    only_fc2 = Tiny()
    assert weight_standardize(only_fc2, predicate=lambda n, m: n == "fc2") == ["fc2"]
    with pytest.raises(ValueError, match="no module of type"):
        weight_standardize(nn.LayerNorm(4))
    with pytest.raises(ValueError, match="needs at least 2"):
        weight_standardize(nn.Linear(1, 3))
    with pytest.raises(TypeError, match=r"nn\.Module"):
        weight_standardize(torch.ones(3, 3))


def test_weight_standardization_trains_through_the_parametrization():
    torch.manual_seed(2)
    lin = nn.Linear(6, 3)
    weight_standardize(lin)
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)
    lin(torch.randn(4, 6)).square().sum().backward()
    assert lin.parametrizations.weight.original.grad is not None
    opt.step()
    torch.testing.assert_close(lin.weight.mean(1), torch.zeros(3), atol=1e-6, rtol=0)


# --- FixNorm --------------------------------------------------------------------------------


def test_fix_norm_unit_rows_before_and_after_a_step():
    torch.manual_seed(3)
    emb = nn.Embedding(10, 6, padding_idx=0)
    assert fix_norm(emb) is emb
    rows = emb.weight
    norms = torch.linalg.vector_norm(rows, dim=1)
    torch.testing.assert_close(norms[1:], torch.ones(9))
    assert torch.equal(rows[0], torch.zeros(6))  # the zero padding row stays zero, not NaN
    ids = torch.tensor([[1, 2, 3], [4, 5, 9]])
    out = emb(ids)
    torch.testing.assert_close(torch.linalg.vector_norm(out, dim=-1), torch.ones(2, 3))
    opt = torch.optim.SGD(emb.parameters(), lr=10.0)
    out.sum().backward()
    opt.step()
    torch.testing.assert_close(torch.linalg.vector_norm(emb.weight[1:], dim=1), torch.ones(9))
    direction = emb.parametrizations.weight.original[5]
    torch.testing.assert_close(emb.weight[5], direction / direction.norm())


def test_fix_norm_refuses():
    with pytest.raises(TypeError, match=r"nn\.Embedding"):
        fix_norm(nn.Linear(3, 3))
    emb = fix_norm(nn.Embedding(4, 3))
    with pytest.raises(ValueError, match="already has unit rows"):
        fix_norm(emb)


# --- NaP ------------------------------------------------------------------------------------


def test_nap_restores_norms_after_an_sgd_step():
    torch.manual_seed(4)
    model = Tiny()
    nap = NormProjection.from_model(model)
    assert set(nap.params) == {"fc1.weight", "fc2.weight"}  # 2-D Linear weights by default
    initial = {n: p.detach().norm().item() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    y, h = model(torch.randn(2, 5, 8))
    (y.square().sum() + h.sum()).backward()
    opt.step()
    stepped = {n: model.get_parameter(n).detach().clone() for n in nap.params}
    assert all(abs(stepped[n].norm().item() - initial[n]) > 1e-3 for n in nap.params)
    after_step = {n: p.detach().clone() for n, p in model.named_parameters()
                  if n not in nap.params}
    nap.project()
    for n in nap.params:
        w = model.get_parameter(n)
        assert w.norm().item() == pytest.approx(initial[n], rel=1e-6)
        # Only the length changes: the projected matrix is parallel to the stepped one.
        torch.testing.assert_close(w / w.norm(), stepped[n] / stepped[n].norm())
    for n, p in model.named_parameters():  # biases, LN, conv, embedding are not projected
        if n not in nap.params:
            assert torch.equal(p, after_step[n]), n


def test_nap_selection_and_errors():
    model = Tiny()
    chosen = weight_matrices(model, types=(nn.Linear, nn.Embedding),
                             predicate=lambda n, m: n != "fc2")
    assert set(chosen) == {"emb.weight", "fc1.weight"}
    nap = NormProjection([model.fc1.weight, model.fc2.weight])
    assert set(nap.params) == {"0", "1"}
    with pytest.raises(ValueError, match="positive initial norm"):
        NormProjection({"zero": nn.Parameter(torch.zeros(2, 2))})
    with pytest.raises(ValueError, match="no parameters"):
        NormProjection({})
    weight_standardize(model.fc1)
    with pytest.raises(ValueError, match="has a parametrization"):
        weight_matrices(model)
    tied = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    tied[1].weight = tied[0].weight
    assert list(weight_matrices(tied)) == ["0.weight"]  # a shared matrix is projected once


def test_nap_half_precision():
    p = nn.Parameter(torch.randn(8, 8).bfloat16())
    nap = NormProjection({"w": p})
    target = nap.targets["w"]
    assert target.dtype == torch.float32
    with torch.no_grad():
        p.mul_(3)
    nap.project()
    assert p.float().norm().item() == pytest.approx(target.item(), rel=1e-2)


# --- PyTorch's parametrizations -------------------------------------------------------------


def test_apply_weight_norm_installs_torch_parametrization_and_keeps_outputs():
    torch.manual_seed(5)
    model = Tiny()
    x = torch.randn(2, 5, 8)
    before = model(x)
    names = apply_weight_norm(model, types=(nn.Linear,))
    assert names == ["fc1", "fc2"]
    for m in (model.fc1, model.fc2):
        assert parametrize.is_parametrized(m, "weight")
        assert type(m.parametrizations.weight[0]).__name__ == "_WeightNorm"
        assert {"original0", "original1"} <= {n for n, _ in m.parametrizations.weight
                                              .named_parameters()}
    assert not parametrize.is_parametrized(model.conv)
    for a, b in zip(model(x), before, strict=True):
        torch.testing.assert_close(a, b)  # g starts at ||V||: nothing changes at creation


def test_apply_spectral_norm_installs_torch_parametrization():
    torch.manual_seed(6)
    model = Tiny()
    names = apply_spectral_norm(model, predicate=lambda n, m: n.startswith("fc"))
    assert names == ["fc1", "fc2"]
    lin = model.fc1
    assert type(lin.parametrizations.weight[0]).__name__ == "_SpectralNorm"
    model.train()
    for _ in range(30):  # power iteration runs once per training forward
        model(torch.randn(2, 5, 8))
    sigma = torch.linalg.matrix_norm(lin.weight.detach(), ord=2)
    assert sigma.item() == pytest.approx(1.0, rel=1e-3)
    with pytest.raises(ValueError, match="no module of type"):
        apply_spectral_norm(nn.ReLU())


# --- gradients ------------------------------------------------------------------------------


def test_parametrizations_gradcheck_fp64():
    w = torch.randn(3, 5, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(WeightStandardization(), (w,))
    assert torch.autograd.gradcheck(UnitRows(), (w,))
    conv_w = torch.randn(2, 2, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(WeightStandardization(), (conv_w,))
