"""fake_quantized swaps weights and hooks inputs for the `with` block only; quant_error
measures against hand computations."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from quant_models import hf, inputs, normlab, output
from torch import nn

from normlab.quant import QuantSpec, fake_quant, fake_quantized, quant_error, quantizable


class TwoLinears(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(16, 4, bias=False)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


@pytest.mark.parametrize("spec", [QuantSpec(8, 8, "channel", "tensor"),
                                  QuantSpec(4, 8, "tensor", "token"),
                                  QuantSpec(4, None, "channel"), QuantSpec(None, 4, "channel",
                                                                           "channel")])
def test_quantized_forward_is_the_formula_layer_by_layer(spec):
    model = TwoLinears()
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(1)) * 3

    def q_in(t):
        return t if spec.a_bits is None else fake_quant(t, spec.a_bits, spec.a_granularity, -1)

    def q_w(w):
        return w if spec.w_bits is None else fake_quant(w, spec.w_bits, spec.w_granularity, 0)

    h = torch.relu(F.linear(q_in(x), q_w(model.a.weight), model.a.bias))
    expected = F.linear(q_in(h), q_w(model.b.weight))
    params = {n: p.clone() for n, p in model.named_parameters()}
    with torch.no_grad(), fake_quantized(model, spec) as paths:
        got = model(x)
    assert paths == ["a", "b"]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert {n: p for n, p in model.named_parameters()}.keys() == params.keys()
    for n, p in model.named_parameters():
        assert isinstance(p, nn.Parameter) and torch.equal(p, params[n])


def test_a_tied_head_stays_tied_and_the_embedding_unquantized():
    model = normlab("gpt")
    assert model.lm_head.weight is model.wte.weight
    emb = model.wte.weight.detach().clone()
    with fake_quantized(model, QuantSpec(4, 8)):
        assert not torch.equal(model.lm_head.weight, emb)
        assert torch.equal(model.wte.weight, emb)
    assert model.lm_head.weight is model.wte.weight


def test_weights_come_back_when_the_body_raises():
    model = TwoLinears()
    before = model.a.weight
    with pytest.raises(RuntimeError, match="boom"), fake_quantized(model, QuantSpec(4, 4)):
        raise RuntimeError("boom")
    assert model.a.weight is before and not model.a._forward_pre_hooks


def test_gpt2_conv1d_is_quantized_per_output_column():
    model = hf("gpt2")
    layer = model.transformer.h[0].mlp.c_fc  # Conv1D, weight (in, out)
    assert type(layer).__name__ == "Conv1D"
    w = layer.weight.detach().clone()
    step = w.abs().amax(0, keepdim=True) / 127
    with fake_quantized(model, QuantSpec(8, None, "channel"), where="*.mlp.c_fc") as paths:
        torch.testing.assert_close(layer.weight, (w / step).round() * step)
    assert paths == [f"transformer.h.{i}.mlp.c_fc" for i in range(2)]


def test_where_selects_and_reports_when_nothing_matches():
    model = TwoLinears()
    assert [n for n, _ in quantizable(model, "b")] == ["b"]
    with pytest.raises(ValueError, match="selected no Linear; the Linears are: a, b"):
        quantizable(model, "nothing*")
    with pytest.raises(TypeError, match="QuantSpec"), fake_quantized(model, "W8A8"):
        pass


def test_site_errors_by_hand_and_int4_worse_than_int8():
    model = TwoLinears()
    batches = [torch.randn(7, 8, generator=torch.Generator().manual_seed(s)) for s in (2, 3)]
    spec = QuantSpec(4, 8, "tensor", "token")
    report = quant_error(model, spec, batches)
    num = den = 0.0
    for x in batches:
        y = F.linear(x, model.a.weight, model.a.bias)
        yq = F.linear(fake_quant(x, 8, "token"), fake_quant(model.a.weight, 4), model.a.bias)
        num += (yq - y).double().square().sum().item()
        den += y.double().square().sum().item()
    site = {s.path: s for s in report.sites}["a"]
    assert site.rel_error == pytest.approx(math.sqrt(num / den), rel=1e-6)
    assert site.sqnr_db == pytest.approx(-20 * math.log10(site.rel_error))
    better = quant_error(model, QuantSpec(8, 8, "tensor", "token"), batches)
    assert better.output_rel_error < report.output_rel_error
    assert all(b.rel_error < w.rel_error for b, w in zip(better.sites, report.sites,
                                                          strict=True))


def test_overall_error_and_score_on_a_normlab_gpt():
    model = normlab("gpt")
    batch = inputs(model)
    batches = [(batch["idx"], batch["idx"])]
    reference = copy.deepcopy(model)

    def loss(m, b):
        return m(*b)[1].item()

    report = quant_error(model, QuantSpec(4, 4, "tensor", "tensor"), batches, score=loss)
    assert report.score_fp == pytest.approx(loss(reference, batches[0]))
    assert report.score_quant != report.score_fp
    assert 0 < report.output_rel_error < 1 and 0 < report.output_cosine < 1
    assert "W4A4" in str(report) and len(report.sites) == len(quantizable(model))
    torch.testing.assert_close(output(model, batch), output(reference, batch), rtol=0, atol=0)
    with pytest.raises(ValueError, match="at least one batch"):
        quant_error(model, QuantSpec(), [])
