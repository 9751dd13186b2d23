"""The per-norm outlier report: hand computations, a planted channel, and `diagnose`."""

from __future__ import annotations

import math

import pytest
import torch
from quant_models import OUTLIER_CHANNELS, inputs, normlab

from normlab.diagnostics import diagnose
from normlab.diagnostics.outliers import norm_outliers


def test_by_hand():
    # n̂ rows; γ = (1, 4, 1, 0.5), β = (0, 1, 0, 0)
    n = torch.tensor([[1.0, -1.0, 0.5, 2.0], [-2.0, 0.5, 1.0, -1.0]])
    gamma = torch.tensor([1.0, 4.0, 1.0, 0.5])
    beta = torch.tensor([0.0, 1.0, 0.0, 0.0])
    y = n * gamma + beta
    out = norm_outliers(y, gamma, beta, top_k=2)
    # max|y| per channel: 2, max(|-3|, |3|) = 3, 1, 1
    assert out["channel_abs_max"] == [2.0, 3.0, 1.0, 1.0]
    # the median of an even count is the lower middle value (torch.median): 1 of (1, 1, 2, 3)
    assert out["channel_spread"] == pytest.approx(3.0)
    # before the affine: 2, 1, 1, 2 -> spread 2 / 1
    assert out["channel_spread_before_affine"] == pytest.approx(2.0)
    assert out["affine_spread_factor"] == pytest.approx(1.5)
    assert out["gamma_spread"] == pytest.approx(4.0 / 1.0)
    centred = y.double() - y.double().mean()
    kurt = (centred.pow(4).mean() / centred.square().mean().square()).item()
    assert out["kurtosis"] == pytest.approx(kurt)
    c = n.double() - n.double().mean()
    assert out["kurtosis_before_affine"] == pytest.approx(
        (c.pow(4).mean() / c.square().mean().square()).item())
    top = out["dominant"]
    assert [d["channel"] for d in top] == [1, 0]
    assert top[0]["abs_max_before_affine"] == pytest.approx(1.0)
    assert top[0]["gamma"] == 4.0 and top[0]["beta"] == 1.0
    assert top[0]["ratio_to_median"] == pytest.approx(3.0)


def test_a_channel_with_zero_gamma_is_left_out_before_the_affine():
    y = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    gamma = torch.ones(6)
    gamma[2] = 0.0
    y[:, 2] = 0.0
    out = norm_outliers(y, gamma, None, top_k=6)
    assert out["dominant"][-1]["channel"] == 2
    assert math.isnan(out["dominant"][-1]["abs_max_before_affine"])
    assert math.isfinite(out["channel_spread_before_affine"])


def test_a_planted_outlier_channel_is_found_and_blamed_on_gamma():
    gen = torch.Generator().manual_seed(1)
    n = torch.randn(400, 64, generator=gen)
    gamma = torch.ones(64)
    gamma[37] = 30.0
    out = norm_outliers(n * gamma, gamma, None)
    assert out["dominant"][0]["channel"] == 37
    assert out["affine_spread_factor"] > 10
    assert out["kurtosis"] > 10 > out["kurtosis_before_affine"]
    # the same outlier in the input (γ = 1) is not γ's
    n[:, 37] *= 30
    out = norm_outliers(n, None, None)
    assert out["dominant"][0]["channel"] == 37 and out["affine_spread_factor"] == 1.0


def test_bad_input():
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        norm_outliers(torch.ones(3))
    with pytest.raises(ValueError, match="top_k"):
        norm_outliers(torch.ones(3, 2), top_k=0)


def test_diagnose_reports_the_planted_gamma_channels_of_every_norm():
    model = normlab("gpt", "layernorm")
    idx = inputs(model, batch=4)["idx"]
    report = diagnose(model, [(idx, idx)], backward=False, skip=False)
    entries = {n["name"]: n["outliers"] for n in report["norms"]}
    assert set(entries) == {"blocks.0.norms.attn_pre", "blocks.0.norms.mlp_pre",
                            "blocks.1.norms.attn_pre", "blocks.1.norms.mlp_pre", "final_norm"}
    for name, out in entries.items():
        found = {d["channel"] for d in out["dominant"][:2]}
        assert found == set(OUTLIER_CHANNELS), name
        assert out["affine_spread_factor"] > 3
        norm = model.get_submodule(name)
        assert out["dominant"][0]["gamma"] == pytest.approx(
            norm.weight[out["dominant"][0]["channel"]].item())
