"""The diagnostic metrics: pure functions of tensors, no module, no hook, no state.

Conventions: an activation `x` has shape (..., C) (C channels, the last axis); its leading axes
are tokens. `mask` (optional, bool, shape x.shape[:-1], True = real token) drops padding.
Every reduction runs in float64 so that the numbers do not depend on the model's dtype.
Scalar results are Python floats, ready for JSON.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from normlab.functional import real_tokens


def _rows(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """The (N, C) real-token rows of `x` in float64."""
    if x.dim() < 1:
        raise ValueError(f"expected an activation of shape (..., C), got a scalar {tuple(x.shape)}")
    if mask is not None and tuple(mask.shape) != tuple(x.shape[:-1]):
        raise ValueError(
            f"mask must have shape x.shape[:-1] = {tuple(x.shape[:-1])}, got {tuple(mask.shape)}"
        )
    rows = real_tokens(x.detach(), mask).to(torch.float64)
    if rows.numel() == 0:
        raise ValueError("no real tokens to measure: the tensor is empty or the mask is all False")
    return rows


def moments(x: Tensor, mask: Tensor | None = None) -> dict[str, float]:
    """Mean, standard deviation, variance and RMS over every entry of the real tokens of `x`.

        mean = Σ x / n,  variance = Σ (x - mean)² / n  (population),  std = √variance,
        rms = √(Σ x² / n)

    For a residual stream, `rms` and `variance` are the "size of the stream" that grows with
    depth under Pre-LN (rms² = variance + mean²).
    """
    rows = _rows(x, mask)
    mean = rows.mean()
    variance = (rows - mean).square().mean()
    return {
        "mean": mean.item(),
        "std": variance.sqrt().item(),
        "variance": variance.item(),
        "rms": rows.square().mean().sqrt().item(),
    }


def angular_distance(x: Tensor, y: Tensor, mask: Tensor | None = None) -> float:
    """Mean over tokens of arccos(cos(x_t, y_t)) / π: 0 = same direction, 1 = opposite.

    `x` (a block's input) and `y` (its output) have the same shape (..., C). A token where
    either vector is zero has no direction; its cosine is taken as 0 (distance 1/2).
    Used by "The Unreasonable Ineffectiveness of the Deeper Layers" (Gromov et al., 2024) to
    find blocks that barely change the residual stream.
    """
    if x.shape != y.shape:
        raise ValueError(f"angular_distance: x and y must have the same shape, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    a, b = _rows(x, mask), _rows(y, mask)
    norms = a.norm(dim=-1) * b.norm(dim=-1)
    dot = (a * b).sum(-1)
    cos = torch.where(norms > 0, dot / norms.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    return (torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi).mean().item()


def l2_norm(t: Tensor) -> float:
    """‖t‖₂ over every entry (a gradient's size)."""
    return torch.linalg.vector_norm(t.detach().to(torch.float64)).item()


def token_norm_mean(x: Tensor, mask: Tensor | None = None) -> float:
    """Mean over tokens of ‖x_t‖₂ (per-token size of an activation gradient, say)."""
    return _rows(x, mask).norm(dim=-1).mean().item()


def channel_max_over_median(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per channel c: max_t |x_{t,c}| / median_{t,c'} |x_{t,c'}|, shape (C,), float64.

    The denominator is the median magnitude of the whole activation (every token and channel),
    so a channel that is large on every token (an "outlier feature") stands out as well as one
    that spikes on a single token; a ratio per channel against its own median would hide the
    first kind. Infinite where the median is 0 and the channel is not.
    """
    magnitude = _rows(x, mask).abs()
    return magnitude.amax(0) / magnitude.median()


def kurtosis(x: Tensor, mask: Tensor | None = None) -> float:
    """Pearson kurtosis E[(x-μ)⁴] / E[(x-μ)²]² over every entry (3 for a Gaussian, not excess).

    Heavy tails (a few huge activations) push it far above 3. NaN for a constant tensor.
    """
    rows = _rows(x, mask)
    centred = rows - rows.mean()
    return (centred.pow(4).mean() / centred.square().mean().square()).item()


def channel_rms_kurtosis(x: Tensor, mask: Tensor | None = None) -> float:
    """Kurtosis of the per-channel RMS: with s_c = √(mean_t x_{t,c}²), mean(s⁴) / mean(s²)².

    1 when every channel has the same RMS, about C when one channel carries all the energy:
    the outlier-feature measure of "Understanding and Minimising Outlier Features in
    Transformer Training" (He, Noci, Paliotta, Schlag, Hofmann; NeurIPS 2024).
    """
    s2 = _rows(x, mask).square().mean(0)
    return (s2.square().mean() / s2.mean().square()).item()


def top_k_abs(x: Tensor, k: int) -> list[tuple[float, int, int]]:
    """The `k` entries of the (N, C) matrix `x` largest in |value|: (value, row, channel).

    Sorted by decreasing magnitude; fewer than `k` when `x` has fewer entries. Massive
    activations ("Massive Activations in Large Language Models", Sun, Chen, Kolter, Liu;
    COLM 2024) show up as a handful of entries thousands of times the median.
    """
    if x.dim() != 2:
        raise ValueError(f"top_k_abs expects an (N, C) matrix, got shape {tuple(x.shape)}")
    if k < 1:
        raise ValueError(f"top_k_abs: k must be >= 1, got {k}")
    flat = x.detach().reshape(-1)
    index = flat.abs().topk(min(k, flat.numel())).indices
    channels = x.shape[1]
    return [(flat[i].item(), int(i) // channels, int(i) % channels) for i in index.tolist()]


def fluctuation(batch: Tensor, running: Tensor, scale: Tensor) -> dict[str, float]:
    """How far per-step batch statistics stray from the running estimate, in units of `scale`.

    Args:
        batch: (S, C) one batch statistic (mean, variance, ...) per recorded step and channel.
        running: (S, C) the running estimate of the same statistic at each step (the value
            eval mode would use instead).
        scale: (S, C) positive units: the running std for a mean, the running value itself for
            a variance or a quadratic mean (a relative error).

    Returns:
        deviation: mean over steps and channels of |batch - running| / scale;
        step_std: mean over channels of std_steps(batch) / mean_steps(scale) (population std,
            0 for a single step): how much the statistic itself jumps from batch to batch.

    A batch-statistics norm trains on `batch` and evaluates with `running`; a large deviation is
    the train/eval mismatch, a large step_std the noise each token's output inherits from the
    rest of its batch.
    """
    if batch.dim() != 2 or batch.shape != running.shape or batch.shape != scale.shape:
        raise ValueError(f"fluctuation: batch, running and scale must share one (S, C) shape, got "
                         f"{tuple(batch.shape)}, {tuple(running.shape)}, {tuple(scale.shape)}")
    b, r, s = (t.to(torch.float64) for t in (batch, running, scale))
    if not bool((s > 0).all()):
        raise ValueError("fluctuation: scale must be positive (add eps to a variance)")
    return {
        "deviation": ((b - r).abs() / s).mean().item(),
        "step_std": (b.std(0, correction=0) / s.mean(0)).mean().item(),
    }


# The bounded functions a `normlab.norms.Squash` may name, each with range (-1, 1).
SQUASHES = {"tanh": torch.tanh}


def saturation(fn: str, x: Tensor, gain: Tensor | float, threshold: float = 0.99) -> float:
    """Fraction of the entries of `x` where |fn(gain·x)| exceeds `threshold` (fn in `SQUASHES`).

    `gain` is a scalar or broadcasts against `x` (one value per row, say). Saturated entries
    pass (almost) no gradient: for tanh, 1 - tanh² < 0.02 at threshold 0.99.
    """
    if fn not in SQUASHES:
        raise ValueError(f"saturation: fn must be one of {sorted(SQUASHES)}, got {fn!r}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"{fn}_saturation: threshold must be in (0, 1), got {threshold}")
    a = gain.detach().to(torch.float64) if isinstance(gain, Tensor) else float(gain)
    squashed = SQUASHES[fn](a * x.detach().to(torch.float64))
    return (squashed.abs() > threshold).double().mean().item()


def tanh_saturation(x: Tensor, alpha: Tensor | float, threshold: float = 0.99) -> float:
    """Fraction of the entries of `x` where DyT's |tanh(α·x)| exceeds `threshold`."""
    return saturation("tanh", x, alpha, threshold)


def s_curve_sample(
    x: Tensor, y: Tensor, *, channels: int = 6, points: int = 128, seed: int = 0,
    digits: int = 4,
) -> dict[str, list]:
    """A subsample of a norm's (input, output) pairs for `channels` evenly spaced channels.

    `x`, `y`: (N, C) rows of a norm's input and output. For each chosen channel c, `points`
    tokens drawn without replacement (the same tokens for every channel, fixed by `seed`),
    rounded to `digits` significant digits (the samples are for plotting only).
    Plotted, y_c against x_c shows LayerNorm's tanh-like S-curve over many tokens (a token's
    own statistics bend the line) and DyT's exact tanh.

    Returns {"channels": [c...], "x": [[...] per channel], "y": [[...] per channel]}.
    """
    if x.dim() != 2 or x.shape != y.shape:
        raise ValueError(f"s_curve_sample expects two (N, C) matrices of one shape, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    n, c = x.shape
    picked = torch.linspace(0, c - 1, min(channels, c)).round().long().unique()
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(n, generator=generator)[: min(points, n)]
    def sample(t: Tensor) -> list[list[float]]:
        return [[float(f"{v:.{digits}g}") for v in column]
                for column in t.detach()[rows][:, picked].T.double().tolist()]

    return {"channels": picked.tolist(), "x": sample(x), "y": sample(y)}
