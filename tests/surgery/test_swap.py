"""swap_norms: translation of eps/γ/β/offsets, exactness claims, approximations, selection."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from surgery_models import bert, gpt2, llama, outputs, rel_err, token_ids
from torch import nn
from transformers.models.gemma.modeling_gemma import GemmaRMSNorm

from normlab.norms import Norm, make_norm
from normlab.norms.elementwise import DyT
from normlab.norms.layer import LayerNorm
from normlab.surgery import swap_norms

TOL = 1e-5


def test_bert_layernorm_to_layernorm_is_exact():
    model = bert()
    source = copy.deepcopy(model)
    model, report = swap_norms(model, "layernorm")
    ids = token_ids()
    assert rel_err(outputs(model, input_ids=ids), outputs(source, input_ids=ids)) < TOL
    assert report.exact and len(report.changes) == 5
    assert all(isinstance(m, LayerNorm) and m.eps == 1e-12 for m in model.modules()
               if isinstance(m, Norm))  # eps translated from the source, not the default


def test_bert_to_dyt_needs_approximate_and_reports_it():
    model = bert()
    with pytest.raises(ValueError, match=r"layernorm → dyt.*approximate=True"):
        swap_norms(model, "dyt")
    assert isinstance(model.embeddings.LayerNorm, nn.LayerNorm)  # nothing changed
    model, report = swap_norms(model, "dyt", approximate=True, alpha_init=0.3)
    assert not report.exact
    assert all("approximation" in c.detail and "γ copied" in c.detail for c in report.changes)
    assert report.max_abs_error > 1e-3  # DyT is not LayerNorm
    dyt = model.encoder.layer[0].output.LayerNorm
    assert isinstance(dyt, DyT) and dyt.alpha.item() == pytest.approx(0.3)
    source = bert()
    torch.testing.assert_close(dyt.weight, source.encoder.layer[0].output.LayerNorm.weight)
    torch.testing.assert_close(dyt.bias, source.encoder.layer[0].output.LayerNorm.bias)


def test_llama_rmsnorm_to_rmsnorm_translates_variance_epsilon():
    model = llama()
    model.model.norm.variance_epsilon = 1e-3
    source = copy.deepcopy(model)
    model, report = swap_norms(model, "rmsnorm")
    ids = token_ids()
    assert rel_err(outputs(model, input_ids=ids), outputs(source, input_ids=ids)) < TOL
    assert report.exact and model.model.norm.eps == 1e-3


def test_layernorm_to_rmsnorm_drops_beta_with_a_note():
    model = gpt2()
    with pytest.raises(ValueError, match="β dropped"):
        swap_norms(model, "rmsnorm", "*.ln_1")
    model, report = swap_norms(model, "rmsnorm", "*.ln_1", approximate=True)
    assert len(report.changes) == 2
    assert all("β dropped" in c.detail for c in report.changes)


def test_changing_eps_is_an_approximation():
    with pytest.raises(ValueError, match=r"eps 1e-05 → 0\.001"):
        swap_norms(gpt2(), "layernorm", eps=1e-3)


@pytest.mark.parametrize(
    "where",
    [nn.LayerNorm, "*.ln_2", lambda name, m: name.endswith("ln_2")],
    ids=["type", "glob", "predicate"],
)
def test_where_selects(where):
    model, report = swap_norms(gpt2(), "layernorm", where)
    expected = 5 if where is nn.LayerNorm else 2
    assert len(report.changes) == expected
    assert isinstance(model.transformer.h[0].ln_1, LayerNorm if expected == 5 else nn.LayerNorm)


def test_where_that_selects_nothing_is_refused():
    with pytest.raises(ValueError, match="selected no norm module"):
        swap_norms(gpt2(), "layernorm", "*.attn")


def test_a_partial_keeps_its_own_eps():
    spec = functools.partial(LayerNorm, eps=1e-5)
    _model, report = swap_norms(gpt2(), spec)
    assert report.exact and report.max_rel_error < TOL


class _Net(nn.Module):
    """A model without an adapter: swap_norms still works on the norms it recognizes."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm, self.proj = norm, nn.Linear(16, 3)

    def forward(self, x):
        return self.proj(self.norm(x))


def test_gemma_offset_is_translated():
    torch.manual_seed(0)
    norm = GemmaRMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_()  # Gemma multiplies by (1 + w)
    net = _Net(norm)
    x = torch.randn(4, 16)
    # the formula, independently: x / sqrt(mean(x²) + eps) · (1 + w)
    expected = net.proj(x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * (1 + norm.weight))
    net, report = swap_norms(net, "rmsnorm", probe=x)
    assert report.exact and "1 + stored weight" in report.changes[0].detail
    torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-6)
    assert report.max_rel_error < TOL


def test_scalenorm_gain_is_carried_as_a_per_channel_gamma():
    # ScaleNorm g·x/‖x‖ = RMSNorm(x)·g/√D (up to eps): the swap carries γ = g/√D per channel
    torch.manual_seed(0)
    norm = make_norm("scalenorm", 16)
    with torch.no_grad():
        norm.gain.fill_(2.5)
    net = _Net(norm)
    x = torch.randn(4, 16)
    expected = net.proj(2.5 * x / x.norm(dim=-1, keepdim=True))
    net, report = swap_norms(net, "rmsnorm", probe=x, approximate=True, eps=1e-12)
    assert not report.exact and "scalar gain expanded to 16 channels" in report.changes[0].detail
    torch.testing.assert_close(net.norm.weight, torch.full((16,), 2.5 / 4))
    torch.testing.assert_close(net(x), expected)


def test_torch_rmsnorm_without_eps_gets_the_dtype_eps():
    net = _Net(nn.RMSNorm(16))
    x = torch.randn(4, 16)
    expected = net(x)
    net, _report = swap_norms(net, "rmsnorm", probe=x)
    assert net.norm.eps == torch.finfo(torch.float32).eps
    torch.testing.assert_close(net(x), expected)


def test_without_adapter_or_probe_the_error_is_not_measured():
    _net, report = swap_norms(_Net(nn.LayerNorm(16)), "layernorm")
    assert any("not measured" in n for n in report.notes)


def test_a_non_norm_selection_is_refused():
    net = _Net(nn.LayerNorm(16))
    with pytest.raises(ValueError, match="selected no norm module"):
        swap_norms(net, "layernorm", "proj")
