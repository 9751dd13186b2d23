"""Fake quantization against the formula, hand computations and torch.ao's fake-quant ops."""

from __future__ import annotations

import pytest
import torch

from normlab.quant import QuantSpec, fake_quant, qmax


def test_int4_per_tensor_by_hand():
    # max|x| = 2 -> Δ = 2/7; x/Δ = 1.75, -3.85, 0.91, 7 -> 2, -4, 1, 7
    x = torch.tensor([0.5, -1.1, 0.26, 2.0])
    step = 2.0 / 7
    expected = torch.tensor([2, -4, 1, 7]) * step
    torch.testing.assert_close(fake_quant(x, 4), expected.float())


def test_symmetric_clipping_never_reaches_minus_qmax_minus_one():
    x = torch.tensor([-1.0, 1.0, -0.999])
    out = fake_quant(x, 8)
    assert out.min().item() == pytest.approx(-1.0)
    assert qmax(8) == 127 and qmax(4) == 7


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("granularity", ["tensor", "channel", "token"])
def test_against_the_formula(bits, granularity):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, 16, generator=gen, dtype=torch.float64) * torch.logspace(
        -1, 1, 16, dtype=torch.float64)
    q = 2 ** (bits - 1) - 1
    if granularity == "tensor":
        amax = x.abs().max()
    elif granularity == "token":
        amax = x.abs().amax(-1, keepdim=True)
    else:  # axis 1
        amax = x.abs().amax(dim=(0, 2), keepdim=True)
    step = amax / q
    expected = (x / step).round().clamp(-q, q) * step
    got = fake_quant(x, bits, granularity, axis=1)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    levels = (got / step).round()
    assert levels.abs().max() <= q and torch.allclose(got / step, levels)


@pytest.mark.parametrize("bits", [8, 4])
def test_matches_torch_ao_fake_quant_ops(bits):
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(24, 40, generator=gen) * torch.rand(24, 1, generator=gen) * 3
    q = qmax(bits)
    amax = w.abs().amax(1)
    scale = (amax / q).float()
    ref = torch.fake_quantize_per_channel_affine(
        w, scale, torch.zeros(24, dtype=torch.int32), 0, -q, q)
    got = fake_quant(w, bits, "channel", axis=0)
    diff = (got - ref).abs() / scale[:, None]
    # torch.ao multiplies by a float32 1/Δ: a tie may round the other way, never by more
    assert (diff > 1e-3).float().mean() < 1e-3 and diff.max() < 1 + 1e-3
    ref_t = torch.fake_quantize_per_tensor_affine(w, float(w.abs().max() / q), 0, -q, q)
    diff_t = (fake_quant(w, bits) - ref_t).abs() / (w.abs().max() / q)
    assert (diff_t > 1e-3).float().mean() < 1e-3 and diff_t.max() < 1 + 1e-3


def test_zero_groups_stay_zero_and_low_precision_keeps_its_dtype():
    x = torch.zeros(3, 4)
    assert torch.equal(fake_quant(x, 8, "token"), x)
    h = torch.randn(4, 8, dtype=torch.bfloat16)
    out = fake_quant(h, 8, "channel", axis=-1)
    assert out.dtype == torch.bfloat16
    ref = fake_quant(h.float(), 8, "channel", axis=-1)
    torch.testing.assert_close(out.float(), ref.bfloat16().float())


@pytest.mark.parametrize("bits", [0, 1, 9, 16, 8.0, True, "8"])
def test_unsupported_bit_widths_are_rejected(bits):
    with pytest.raises(ValueError, match="bit width"):
        fake_quant(torch.ones(2), bits)
    with pytest.raises(ValueError, match="bit width"):
        QuantSpec(w_bits=bits)


def test_spec_parsing_and_bad_granularities():
    assert QuantSpec.parse("W4A8") == QuantSpec(4, 8)
    assert QuantSpec.parse("a8", a_granularity="token") == QuantSpec(None, 8, "channel", "token")
    assert QuantSpec.parse("w8").a_bits is None
    for bad in ("", "W8A", "int8", "W4A8x"):
        with pytest.raises(ValueError, match="W8A8"):
            QuantSpec.parse(bad)
    with pytest.raises(ValueError, match="weight granularity"):
        QuantSpec(w_granularity="token")
    with pytest.raises(ValueError, match="activation granularity"):
        QuantSpec(a_granularity="row")
    with pytest.raises(ValueError, match="granularity"):
        fake_quant(torch.ones(2), 8, "block")
