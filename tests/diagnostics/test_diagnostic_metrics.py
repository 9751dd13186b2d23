"""Each metric against a hand computation on small tensors (written here from the formulas)."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from normlab.diagnostics import metrics

X = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]])  # (tokens=2, C=3)
VALUES = [1.0, -2.0, 0.5, 3.0, 0.0, -1.0]


def test_moments_by_hand():
    mean = sum(VALUES) / 6
    variance = sum((v - mean) ** 2 for v in VALUES) / 6
    got = metrics.moments(X)
    assert got["mean"] == pytest.approx(mean)
    assert got["variance"] == pytest.approx(variance)
    assert got["std"] == pytest.approx(math.sqrt(variance))
    assert got["rms"] == pytest.approx(math.sqrt(sum(v * v for v in VALUES) / 6))


def test_moments_mask_drops_padding():
    x = torch.cat([X, torch.full((1, 3), 1e6)])  # a padded token with huge values
    mask = torch.tensor([True, True, False])
    assert metrics.moments(x, mask) == pytest.approx(metrics.moments(X))


def test_angular_distance_by_hand():
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    y = torch.tensor([[0.0, 3.0], [2.0, 2.0], [0.0, -1.0]])
    # angles: 90°, 0°, 180° -> distances 1/2, 0, 1
    assert metrics.angular_distance(x, y) == pytest.approx((0.5 + 0.0 + 1.0) / 3)


def test_angular_distance_general_vectors_and_zero_token():
    torch.manual_seed(0)
    x, y = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    expected = []
    for a, b in zip(x.tolist(), y.tolist(), strict=True):
        cos = sum(p * q for p, q in zip(a, b, strict=True)) / (
            math.sqrt(sum(p * p for p in a)) * math.sqrt(sum(q * q for q in b)))
        expected.append(math.acos(cos) / math.pi)
    assert metrics.angular_distance(x, y) == pytest.approx(sum(expected) / 4)
    zero = torch.zeros(1, 5, dtype=torch.float64)
    assert metrics.angular_distance(zero, y[:1]) == pytest.approx(0.5)


def test_angular_distance_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        metrics.angular_distance(torch.ones(2, 3), torch.ones(2, 4))


def test_norms_of_gradients():
    g = torch.tensor([[3.0, 4.0], [0.0, 12.0]])
    assert metrics.l2_norm(g) == pytest.approx(math.sqrt(9 + 16 + 144))
    assert metrics.token_norm_mean(g) == pytest.approx((5.0 + 12.0) / 2)


def test_channel_max_over_median_by_hand():
    # |x| = [1, 2, .5, 3, 0, 1]; median of 6 values: torch takes the lower middle -> 1.0
    got = metrics.channel_max_over_median(X)
    median = 1.0
    assert got.tolist() == pytest.approx([3.0 / median, 2.0 / median, 1.0 / median])


def test_kurtosis_by_hand():
    mean = sum(VALUES) / 6
    m2 = sum((v - mean) ** 2 for v in VALUES) / 6
    m4 = sum((v - mean) ** 4 for v in VALUES) / 6
    assert metrics.kurtosis(X) == pytest.approx(m4 / m2**2)


def test_kurtosis_of_a_gaussian_is_three():
    x = torch.randn(200_000, 1, generator=torch.Generator().manual_seed(0))
    assert metrics.kurtosis(x) == pytest.approx(3.0, abs=0.05)


def test_channel_rms_kurtosis_by_hand_and_extremes():
    s2 = [(1 + 9) / 2, (4 + 0) / 2, (0.25 + 1) / 2]  # mean square per channel
    expected = (sum(v * v for v in s2) / 3) / (sum(s2) / 3) ** 2
    assert metrics.channel_rms_kurtosis(X) == pytest.approx(expected)
    assert metrics.channel_rms_kurtosis(torch.ones(4, 8)) == pytest.approx(1.0)
    one_hot = torch.zeros(4, 8)
    one_hot[:, 3] = 5.0
    assert metrics.channel_rms_kurtosis(one_hot) == pytest.approx(8.0)


def test_top_k_abs_positions():
    x = torch.tensor([[0.1, -7.0, 2.0], [5.0, 0.0, -0.2]])
    assert metrics.top_k_abs(x, 2) == [(-7.0, 0, 1), (5.0, 1, 0)]
    assert len(metrics.top_k_abs(x, 100)) == 6
    with pytest.raises(ValueError, match="k must be"):
        metrics.top_k_abs(x, 0)


def test_fluctuation_by_hand():
    batch = torch.tensor([[1.0, 2.0], [3.0, 2.0]])   # (S=2, C=2)
    running = torch.tensor([[0.0, 2.0], [2.0, 1.0]])
    scale = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    got = metrics.fluctuation(batch, running, scale)
    deviation = (abs(1 - 0) / 1 + abs(2 - 2) / 2 + abs(3 - 2) / 1 + abs(2 - 1) / 2) / 4
    step_std = (statistics.pstdev([1.0, 3.0]) / 1 + statistics.pstdev([2.0, 2.0]) / 2) / 2
    assert got["deviation"] == pytest.approx(deviation)
    assert got["step_std"] == pytest.approx(step_std)
    with pytest.raises(ValueError, match="positive"):
        metrics.fluctuation(batch, running, torch.zeros(2, 2))


def test_tanh_saturation_by_hand():
    x = torch.tensor([0.1, 1.0, 3.0, -3.0, 2.0])
    alpha = 1.0
    expected = sum(abs(math.tanh(alpha * v)) > 0.99 for v in x.tolist()) / 5  # |x| > 2.647
    assert metrics.tanh_saturation(x, alpha) == pytest.approx(expected) == pytest.approx(0.4)
    assert metrics.tanh_saturation(x, torch.tensor(10.0)) == pytest.approx(0.8)


def test_s_curve_sample_picks_pairs_from_the_same_tokens():
    x = torch.arange(40.0).reshape(10, 4)
    y = -x
    sample = metrics.s_curve_sample(x, y, channels=2, points=5, seed=1)
    assert sample["channels"] == [0, 3]
    for c, xs, ys in zip(sample["channels"], sample["x"], sample["y"], strict=True):
        assert len(xs) == 5 and ys == [-v for v in xs]
        assert all(int(v) % 4 == c for v in xs)  # every value comes from channel c
    assert len(set(sample["x"][0])) == 5  # drawn without replacement


def test_invariances():
    torch.manual_seed(0)
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    per_token = torch.rand(6, 1, dtype=torch.float64) + 0.1
    # angles ignore positive per-token scales; swapping x and y changes nothing
    assert metrics.angular_distance(x * per_token, y * 3.0) == pytest.approx(
        metrics.angular_distance(y, x))
    # x and -x point opposite ways: the two distances add up to 1 token by token
    assert metrics.angular_distance(x, y) + metrics.angular_distance(x, -y) == pytest.approx(1.0)
    # kurtosis ignores scale and shift; the outlier ratios ignore a global scale
    assert metrics.kurtosis(2.5 * x - 7.0) == pytest.approx(metrics.kurtosis(x))
    assert torch.allclose(metrics.channel_max_over_median(-4.0 * x),
                          metrics.channel_max_over_median(x))
    assert metrics.channel_rms_kurtosis(3.0 * x) == pytest.approx(metrics.channel_rms_kurtosis(x))
    # a channel permutation permutes the per-channel ratios and keeps the rest
    perm = torch.randperm(5)
    assert torch.allclose(metrics.channel_max_over_median(x[:, perm]),
                          metrics.channel_max_over_median(x)[perm])
    moved = metrics.moments(x + 1.0)
    assert moved["variance"] == pytest.approx(metrics.moments(x)["variance"])
    assert moved["mean"] == pytest.approx(metrics.moments(x)["mean"] + 1.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="mask must have shape"):
        metrics.moments(X, torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="no real tokens"):
        metrics.moments(X, torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="threshold"):
        metrics.tanh_saturation(X, 1.0, threshold=1.0)
