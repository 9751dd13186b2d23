"""The stopping rule: its t quantiles and intervals against scipy, its decisions on synthetic
paired data, and its error rate under the null over many simulated studies."""

from __future__ import annotations

import numpy as np
import pytest

from normlab.study.sequential import (
    decide,
    interval,
    look_level,
    sequence,
    t_abs_cdf,
    t_quantile,
)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 7, 10, 17, 30, 61])
def test_t_quantile_and_cdf_match_scipy(df):
    stats = pytest.importorskip("scipy.stats")  # scipy comes with the hf extra's scikit-learn
    for p in (0.5, 0.6, 0.9, 0.975, 0.99, 0.996, 0.9993):
        assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9, abs=1e-12)
    for t in (0.0, 0.3, 1.0, 2.5, 12.0):
        assert t_abs_cdf(t, df) == pytest.approx(1 - 2 * stats.t.sf(t, df), abs=1e-12)


def test_interval_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    deltas = [0.021, -0.004, 0.013, 0.030, 0.008]
    for level in (0.05, 0.05 / 7):
        low, high = interval(deltas, level)
        ref = stats.t.interval(1 - level, len(deltas) - 1, loc=np.mean(deltas),
                               scale=stats.sem(deltas))
        assert (low, high) == pytest.approx(ref, rel=1e-10)


def test_the_level_of_a_look_splits_alpha_over_the_looks():
    assert look_level(8) == pytest.approx(0.05 / 7)
    assert look_level(2, alpha=0.1) == pytest.approx(0.1)


def test_a_large_effect_stops_early():
    rng = np.random.default_rng(0)
    deltas = list(-0.3 + 0.02 * rng.standard_normal(8))
    looks = sequence(deltas, expect="lower", budget=8)
    assert looks[-1].decision == "reproduced"
    assert looks[-1].seeds_run <= 3
    assert all(k.decision == "open" for k in looks[:-1])
    # the same data against a claim of the other sign is decided the other way
    assert sequence(deltas, expect="higher", budget=8)[-1].decision == "not reproduced"


def test_a_null_effect_runs_to_the_budget():
    rng = np.random.default_rng(1)
    deltas = list(0.05 * rng.standard_normal(12))
    looks = sequence(deltas, expect="lower", budget=8)
    assert len(looks) == 8
    assert [k.decision for k in looks] == ["open"] * 7 + ["inconclusive"]
    assert looks[-1].low < 0 < looks[-1].high


def test_the_equivalence_margin_is_respected():
    rng = np.random.default_rng(2)
    noise = 0.002 * rng.standard_normal(8)
    inside = sequence(list(0.001 + noise), expect="matches", margin=0.02)
    assert inside[-1].decision == "reproduced"
    assert inside[-1].low > -0.02 and inside[-1].high < 0.02
    beyond = sequence(list(0.05 + noise), expect="matches", margin=0.02)
    assert beyond[-1].decision == "not reproduced" and beyond[-1].low > 0.02
    # a true difference at the margin, with noise that keeps the interval across it
    straddle = sequence(list(0.02 + 10 * noise), expect="matches", margin=0.02)
    assert straddle[-1].decision == "inconclusive" and len(straddle) == 8
    assert straddle[-1].low < 0.02 < straddle[-1].high


def test_a_lost_seed_spends_the_budget_without_a_pair():
    looks = sequence([0.1, None, -0.1, None], expect="lower", budget=4)
    assert [(k.seeds_run, k.n) for k in looks] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert looks[1].low is None and looks[-1].decision == "inconclusive"


def _false_positive_rate(studies: int, budget: int, per_look_level: float, margin=None,
                         effect: float = 0.0) -> float:
    """The share of simulated studies (i.i.d. normal differences) in which some look's
    interval excludes 0 (or, with a margin, lies inside it)."""
    rng = np.random.default_rng(12345)
    x = effect + rng.standard_normal((studies, budget))
    n = np.arange(1, budget + 1)
    csum, csq = np.cumsum(x, axis=1), np.cumsum(x * x, axis=1)
    mean = csum / n
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt((csq - n * mean**2) / (n - 1))
    crit = np.array([np.inf] + [t_quantile(1 - per_look_level / 2, k - 1)
                                for k in range(2, budget + 1)])
    half = crit * sd / np.sqrt(n)
    low, high = mean - half, mean + half
    if margin is None:
        wrong = (low[:, 1:] > 0) | (high[:, 1:] < 0)
    else:
        wrong = (low[:, 1:] > -margin) & (high[:, 1:] < margin)
    return float(wrong.any(axis=1).mean())


def test_looking_after_every_seed_keeps_the_error_rate_under_the_null():
    budget, alpha = 8, 0.05
    rate = _false_positive_rate(40_000, budget, look_level(budget, alpha))
    assert rate <= alpha
    # the simulation can tell: the same looks at an uncorrected 5 % each inflate the rate
    assert _false_positive_rate(40_000, budget, alpha) > 0.08


def test_a_false_equivalence_is_rare_at_the_margin():
    # a true difference exactly at the margin: declaring "matches" is the error
    rate = _false_positive_rate(40_000, 8, look_level(8), margin=1.0, effect=1.0)
    assert rate <= 0.05


def test_decide_agrees_with_the_simulation_formula():
    deltas = [0.3, 0.1, 0.25]
    look = decide(deltas, expect="lower", budget=8)
    low, high = interval(deltas, 0.05 / 7)
    assert (look.low, look.high, look.n, look.decision) == (low, high, 3, "open")


@pytest.mark.parametrize("kwargs, match", [
    ({"expect": "better"}, "expect must be one of"),
    ({"expect": "matches"}, "needs a positive margin"),
    ({"expect": "matches", "margin": -1.0}, "needs a positive margin"),
    ({"expect": "lower", "margin": 0.1}, "belongs to a 'matches' claim"),
    ({"expect": "lower", "budget": 1}, "budget must be an integer >= 2"),
    ({"expect": "lower", "alpha": 1.5}, "alpha must be in"),
    ({"expect": "lower", "seeds_run": 1}, "cannot come from 1 seeds"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        decide([0.1, 0.2], **kwargs)


def test_bad_quantile_arguments():
    with pytest.raises(ValueError, match="df must be a positive integer"):
        t_quantile(0.9, 0)
    with pytest.raises(ValueError, match="p must be in"):
        t_quantile(0.2, 3)
