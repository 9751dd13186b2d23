"""The stopping rule: look at the paired differences after every seed, stop once decided.

    look = decide([0.02, -0.01, 0.03], expect="lower", budget=8)
    look.decision      # "open", "reproduced", "not reproduced" or "inconclusive"

Each seed gives one paired difference Δ_k = metric(arm, seed k) − metric(baseline, seed k); the
same seed gives both arms the same initialization stream and the same batches. After seed n
(n ≥ 2 completed pairs) the interval for the mean difference δ is the Student-t interval

    Δ̄_n ± t(1 − α′/2, n − 1) · s_n / √n,      α′ = α / (B − 1),

where s_n is the sample standard deviation and B the seed budget. A study looks at most B − 1
times (after seeds 2..B), and Bonferroni's inequality gives every look the share α′ of the error
rate: with probability at least 1 − α the intervals of *all* looks cover δ at once (under
i.i.d. normal differences, the assumption of the t-interval itself). Every decision below only
reads which side of 0 (or of the equivalence margin) the current interval lies on, so stopping
at the first decided look, or at any look, is wrong with probability at most α. This is the
Bonferroni split of α over the looks (an α-spending function that spends α/(B − 1) per look);
it is conservative, but exact in the finite-sample t sense and needs no tuning.

Decisions, for `expect` the claimed sign of δ:
- "lower" (the arm's metric is lower) / "higher": reproduced when the interval lies on the
  claimed side of 0, not reproduced when it lies on the other side;
- "matches" with a margin m > 0: reproduced when the interval lies inside (−m, m) (an
  equivalence test, the Bonferroni analogue of two one-sided tests), not reproduced when it lies
  wholly beyond m or beyond −m;
- otherwise "open" while seeds remain in the budget and "inconclusive" once it is spent.

The t quantile is computed here for integer degrees of freedom from the closed-form CDF
(Abramowitz & Stegun 26.7.3–26.7.4) and bisection, so the rule needs nothing beyond the
standard library.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

EXPECTATIONS = ("lower", "higher", "matches")
DEFAULT_ALPHA = 0.05
DEFAULT_BUDGET = 8
PROCEDURE = ("Bonferroni-corrected sequential t-intervals: after each seed, the two-sided "
             "1 − α/(B − 1) t-interval of the mean paired difference (α = {alpha}, "
             "B = seed budget); stop when it is decided")


def t_abs_cdf(t: float, df: int) -> float:
    """P(|T| ≤ t) for Student's T with an integer number of degrees of freedom `df` ≥ 1.

    θ = atan(t/√ν); ν odd: (2/π)[θ + sin θ (cos θ + (2/3) cos³θ + … )],
    ν even: sin θ [1 + (1/2) cos²θ + (1·3)/(2·4) cos⁴θ + …] (A&S 26.7.3, 26.7.4).
    """
    if not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be a positive integer, got {df!r}")
    if t <= 0:
        return 0.0
    theta = math.atan(t / math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:
        term, total = 1.0, 1.0
        for k in range(2, df, 2):  # (1·3·…·(k−1)) / (2·4·…·k) · cos^k θ
            term *= cos2 * (k - 1) / k
            total += term
        return sin * total
    if df == 1:
        return 2.0 * theta / math.pi
    term = math.cos(theta)
    total = term
    for k in range(3, df - 1, 2):  # (2·4·…·(k−1)) / (1·3·…·k) · cos^k θ
        term *= cos2 * (k - 1) / k
        total += term
    return 2.0 / math.pi * (theta + sin * total)


def t_quantile(p: float, df: int) -> float:
    """The quantile t(p, df) of Student's T, for 0.5 ≤ p < 1 and an integer df ≥ 1."""
    if not 0.5 <= p < 1.0:
        raise ValueError(f"p must be in [0.5, 1), got {p!r}")
    target = 2.0 * p - 1.0
    low, high = 0.0, 1.0
    while t_abs_cdf(high, df) < target:
        low, high = high, 2.0 * high
    for _ in range(200):
        mid = 0.5 * (low + high)
        if t_abs_cdf(mid, df) < target:
            low = mid
        else:
            high = mid
        if high - low <= 1e-13 * high:
            break
    return 0.5 * (low + high)


def look_level(budget: int, alpha: float = DEFAULT_ALPHA) -> float:
    """The error rate α/(B − 1) each look spends, for a seed budget B ≥ 2."""
    if not isinstance(budget, int) or budget < 2:
        raise ValueError(f"the seed budget must be an integer >= 2, got {budget!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return alpha / (budget - 1)


def interval(deltas: Sequence[float], level: float) -> tuple[float, float]:
    """The two-sided (1 − level) t-interval of the mean of `deltas` (at least 2 values)."""
    n = len(deltas)
    if n < 2:
        raise ValueError(f"an interval needs at least 2 paired differences, got {n}")
    mean = statistics.fmean(deltas)
    half = t_quantile(1.0 - level / 2.0, n - 1) * statistics.stdev(deltas) / math.sqrt(n)
    return mean - half, mean + half


@dataclass(frozen=True)
class Look:
    """What the rule says after the seeds seen so far."""

    n: int                                   # completed pairs
    seeds_run: int                           # seeds spent (pairs + lost ones)
    mean: float | None                       # Δ̄ over the pairs
    low: float | None                        # the look's interval (None below 2 pairs)
    high: float | None
    decision: str                            # open | reproduced | not reproduced | inconclusive

    @property
    def decided(self) -> bool:
        return self.decision in ("reproduced", "not reproduced")


def _side(low: float, high: float, expect: str, margin: float | None) -> str | None:
    if expect == "matches":
        if -margin < low and high < margin:
            return "reproduced"
        if low > margin or high < -margin:
            return "not reproduced"
        return None
    claimed_side = high < 0 if expect == "lower" else low > 0
    other_side = low > 0 if expect == "lower" else high < 0
    if claimed_side:
        return "reproduced"
    return "not reproduced" if other_side else None


def check_expectation(expect: str, margin: float | None) -> None:
    if expect not in EXPECTATIONS:
        raise ValueError(f"expect must be one of {', '.join(EXPECTATIONS)}, got {expect!r}")
    if expect == "matches" and not (isinstance(margin, (int, float)) and margin > 0):
        raise ValueError(f"a 'matches' claim needs a positive margin, got {margin!r}")
    if expect != "matches" and margin is not None:
        raise ValueError(f"a margin belongs to a 'matches' claim only, not to {expect!r}")


def decide(deltas: Sequence[float], *, expect: str, margin: float | None = None,
           budget: int = DEFAULT_BUDGET, alpha: float = DEFAULT_ALPHA,
           seeds_run: int | None = None) -> Look:
    """The look after `seeds_run` seeds (default: one per delta), `deltas` the completed pairs."""
    check_expectation(expect, margin)
    level = look_level(budget, alpha)
    seeds_run = len(deltas) if seeds_run is None else seeds_run
    if seeds_run < len(deltas):
        raise ValueError(f"{len(deltas)} paired differences cannot come from {seeds_run} seeds")
    mean = statistics.fmean(deltas) if deltas else None
    low = high = None
    decision = None
    if len(deltas) >= 2:
        low, high = interval(deltas, level)
        decision = _side(low, high, expect, margin)
    if decision is None:
        decision = "inconclusive" if seeds_run >= budget else "open"
    return Look(len(deltas), seeds_run, mean, low, high, decision)


def sequence(pairs: Sequence[float | None], *, expect: str, margin: float | None = None,
             budget: int = DEFAULT_BUDGET, alpha: float = DEFAULT_ALPHA) -> list[Look]:
    """Every look of a study, seed by seed, up to and including the first decided one.

    `pairs[k]` is the paired difference of seed k, or None when either arm did not complete
    that seed (a diverged or failed run): the seed is spent, and no pair is added.
    """
    looks, deltas = [], []
    for seeds_run, delta in enumerate(pairs[:budget], 1):
        if delta is not None:
            deltas.append(delta)
        looks.append(decide(deltas, expect=expect, margin=margin, budget=budget, alpha=alpha,
                            seeds_run=seeds_run))
        if looks[-1].decided:
            break
    return looks
