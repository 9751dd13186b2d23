"""UnMix-TNS against a reference written from the paper's formulas (a loop over samples and
components in fp64), the component update, remove(), and its refusals."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from normlab import make_norm
from normlab.adapt import UnMixTNS


def reference(x, means, vars_, weight, bias, eps, lam, tau):
    """Per sample b: p_bk, the mixed moments, the output; then the component update."""
    B, C, K = x.shape[0], x.shape[-1], means.shape[0]
    out = torch.empty_like(x)
    new_means, new_vars = means.clone(), vars_.clone()
    mu_all, var_all, p_all = [], [], []
    for b in range(B):
        tokens = x[b].reshape(-1, C)
        mu, var = tokens.mean(0), tokens.var(0, unbiased=False)
        sims = torch.stack([torch.dot(mu, means[k]) / (mu.norm() * means[k].norm())
                            for k in range(K)])
        p = torch.softmax(sims / tau, 0)
        m = torch.stack([(1 - p[k]) * means[k] + p[k] * mu for k in range(K)])
        v = torch.stack([(1 - p[k]) * vars_[k] + p[k] * var for k in range(K)])
        mean = m.mean(0)
        total = v.mean(0) + (m * m).mean(0) - mean * mean
        out[b] = (x[b] - mean) / torch.sqrt(total + eps) * weight + bias
        mu_all.append(mu), var_all.append(var), p_all.append(p)
    for k in range(K):
        new_means[k] += lam * sum(p_all[b][k] * (mu_all[b] - means[k]) for b in range(B)) / B
        new_vars[k] += lam * sum(p_all[b][k] * (var_all[b] - vars_[k]) for b in range(B)) / B
    return out, new_means, new_vars


def layer():
    torch.manual_seed(0)
    bn = make_norm("batchnorm", 6).double()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return nn.Sequential(bn)


def test_against_the_reference_and_updates_its_components():
    model = layer()
    bn = model[0]
    unmix = UnMixTNS(model, components=4, batch_size_max=8)
    (comp,) = unmix.components.values()
    x = torch.randn(5, 3, 6, dtype=torch.float64) * 2 + 0.5
    means, vars_ = comp.means.clone(), comp.vars.clone()
    lam = 1 - (1 - bn.momentum) ** (5 / 8)
    expected, new_means, new_vars = reference(x, means.double(), vars_.double(), bn.weight,
                                              bn.bias, bn.eps, lam, 0.07)
    torch.testing.assert_close(model(x), expected.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(comp.means.double(), new_means, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(comp.vars.double(), new_vars, rtol=1e-5, atol=1e-5)


def test_initial_components_spread_around_the_source_statistics():
    model = layer()
    bn = model[0]
    comp = next(iter(UnMixTNS(model, components=2000).components.values()))
    torch.testing.assert_close(comp.vars, (0.5 * bn.running_var).expand(2000, -1))
    spread = comp.means.var(0) / bn.running_var
    assert spread.mean().item() == pytest.approx(0.5 * 2000 / 1999, rel=0.1)
    one = next(iter(UnMixTNS(layer(), components=1).components.values()))
    torch.testing.assert_close(one.means[0], bn.running_mean)
    assert math.isfinite(float(one.vars.sum()))


def test_remove_restores_the_layer_and_batch_size_one_works():
    model = layer()
    x = torch.randn(1, 4, 6, dtype=torch.float64)
    with torch.no_grad():
        plain = model.eval()(x)
    unmix = UnMixTNS(model)
    assert not torch.allclose(model(x), plain)
    unmix.remove()
    torch.testing.assert_close(model(x), plain)


def test_refusals():
    with pytest.raises(ValueError, match="needs BatchNorm or RepBN"):
        UnMixTNS(nn.Sequential(make_norm("layernorm", 4)))
    with pytest.raises(ValueError, match="BatchChannelNorm"):
        UnMixTNS(nn.Sequential(make_norm("bcn", 4)))
    unmix_model = layer()
    UnMixTNS(unmix_model)
    with pytest.raises(ValueError, match="needs tokens"):
        unmix_model(torch.randn(3, 6, dtype=torch.float64))
