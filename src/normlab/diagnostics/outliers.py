"""The outlier channels a norm emits, and how much of them its γ makes.

Per norm site, on the token rows the `Recorder` kept of the norm's output y = γ⊙n̂ + β (the
activation every reader Linear quantizes) and on the same rows before the affine,
n̂ = (y − β)/γ (γ, β read by `normlab.surgery.translate.read_norm`: LayerNorm, RMSNorm,
HuggingFace and normlab norms, Gemma's 1 + w; channels where |γ| < 1e-6·max|γ| have no n̂ and
are left out of the "before" numbers):

    channel_abs_max[c]   = max_t |y_{t,c}|                        (C numbers, 4 digits)
    channel_spread       = max_c channel_abs_max / median_c channel_abs_max
    kurtosis             = Pearson kurtosis of every entry of y (3 for a Gaussian)
    *_before_affine      = the same of n̂
    affine_spread_factor = channel_spread / channel_spread_before_affine
    gamma_spread         = max_c |γ_c| / median_c |γ_c|
    dominant             = the `top_k` channels of largest channel_abs_max, each with its ratio
                           to the median channel, its max before the affine, γ_c and β_c

(median: `torch.median`, the lower middle value of an even count.)

A per-tensor activation quantizer shares one step between all channels, so `channel_spread` is
about how many of its levels the typical channel loses (a spread of 64 leaves an int8 channel
about two levels). An `affine_spread_factor` well above 1 says the norm's γ (not its input)
makes the outliers: the case where migrating a per-channel scale through the norm
(`normlab.surgery.migrate_scales`) removes them exactly. Outliers of Post-LN models and of
normalized activations in general are discussed by Bondarenko, Nagel, Blankevoort,
"Understanding and Overcoming the Challenges of Efficient Transformer Quantization" (EMNLP
2021) and Wei et al., "Outlier Suppression" (NeurIPS 2022), who locate them in LayerNorm's γ.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from normlab.diagnostics import metrics
from normlab.diagnostics.recorder import Recording
from normlab.surgery.translate import read_norm

GAMMA_FLOOR = 1e-6  # relative to max|γ|: channels below have no reliable n̂


def _spread(abs_max: Tensor) -> float:
    median = abs_max.median()
    return (abs_max.max() / median).item() if median > 0 else float("inf")


def _round(values: Tensor) -> list[float]:
    return [float(f"{v:.4g}") for v in values.tolist()]


def norm_outliers(outputs: Tensor, gamma: Tensor | None = None, beta: Tensor | None = None,
                  top_k: int = 5) -> dict[str, Any]:
    """The outlier report (module docstring) of the (N, C) rows `outputs` a norm emitted with
    affine γ, β (None: ones / zeros)."""
    if outputs.dim() != 2:
        raise ValueError(f"norm_outliers expects (N, C) rows, got shape {tuple(outputs.shape)}")
    if top_k < 1:
        raise ValueError(f"norm_outliers: top_k must be >= 1, got {top_k}")
    y = outputs.detach().double()
    channels = y.shape[1]
    g = torch.ones(channels, dtype=torch.float64) if gamma is None else gamma.detach().double()
    b = torch.zeros(channels, dtype=torch.float64) if beta is None else beta.detach().double()
    g, b = g.cpu().expand(channels), b.cpu().expand(channels)
    keep = g.abs() >= GAMMA_FLOOR * g.abs().max()
    before = ((y - b) / torch.where(keep, g, torch.ones_like(g)))[:, keep]
    after_max = y.abs().amax(0)
    before_max = before.abs().amax(0)
    before_full = torch.full((channels,), float("nan"), dtype=torch.float64)
    before_full[keep] = before_max
    median = after_max.median()
    order = after_max.argsort(descending=True)[: min(top_k, channels)]
    spread_after, spread_before = _spread(after_max), _spread(before_max)
    return {
        "channel_abs_max": _round(after_max),
        "channel_spread": spread_after,
        "channel_spread_before_affine": spread_before,
        "affine_spread_factor": spread_after / spread_before,
        "kurtosis": metrics.kurtosis(y),
        "kurtosis_before_affine": metrics.kurtosis(before),
        "gamma_spread": _spread(g.abs()),
        "dominant": [
            {"channel": int(c), "abs_max": after_max[c].item(),
             "ratio_to_median": (after_max[c] / median).item() if median > 0 else float("inf"),
             "abs_max_before_affine": before_full[c].item(), "gamma": g[c].item(),
             "beta": b[c].item()}
            for c in order.tolist()
        ],
    }


def affine_of(module: nn.Module) -> tuple[Tensor | None, Tensor | None] | None:
    """(γ, β) of a norm surgery can read, or None (a norm it cannot read, a multi-axis one)."""
    try:
        params = read_norm(module)
    except ValueError:
        return None
    return None if params is None else (params.weight, params.bias)


def add_norm_outliers(report: dict[str, Any], recording: Recording, model: nn.Module,
                      top_k: int = 5) -> None:
    """Fill each norm entry's "outliers" in the diagnostics dict `report` (None where the norm
    emitted nothing recorded, or is a norm whose affine surgery cannot read)."""
    for entry in report["norms"]:
        captures = recording.norm_out.get(entry["name"])
        affine = affine_of(model.get_submodule(entry["name"]))
        if not captures or affine is None:
            entry["outliers"] = None
            continue
        values = torch.cat([c.values for c in captures])
        if values.shape[1] != (affine[0].shape[-1] if affine[0] is not None else values.shape[1]):
            entry["outliers"] = None
            continue
        entry["outliers"] = norm_outliers(values, *affine, top_k=top_k)
