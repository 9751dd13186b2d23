"""Turn a `Recording` into the diagnostics JSON dict (schema.py; fields in docs/diagnostics.md).

Every number comes from a function of `metrics.py`, applied to the rows collected over all
recorded steps together (concatenated), except parameter-gradient norms, which are averaged
over the steps that had a backward pass.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from normlab.diagnostics import metrics, schema
from normlab.diagnostics.recorder import BatchMoments, Capture, NormEntry, Recording
from normlab.version import __version__

DEFAULT_EPS = 1e-5  # for norms that declare no eps (scale of a running variance)


def _values(captures: list[Capture]) -> Tensor | None:
    return torch.cat([c.values for c in captures]) if captures else None


def _moments(captures: list[Capture]) -> dict[str, float] | None:
    values = _values(captures)
    return None if values is None else metrics.moments(values)


def _position(capture: Capture, row: int) -> dict[str, Any]:
    """Step, batch and token of row `row` of `capture.values` (batch None for 1-D leads)."""
    flat = int(capture.rows[row])
    index = []
    for size in reversed(capture.lead):
        flat, rest = divmod(flat, size)
        index.append(rest)
    index.reverse()
    return {"step": capture.step, "batch": index[0] if len(index) > 1 else None,
            "token": index[-1]}


def _block_entry(rec: Recording, index: int, name: str, cls: str) -> dict[str, Any]:
    inputs, outputs = _values(rec.block_in[name]), _values(rec.block_out[name])
    angular = None
    if inputs is not None and outputs is not None and inputs.shape == outputs.shape:
        angular = metrics.angular_distance(inputs, outputs)
    grads = _values(rec.block_out_grad[name])
    per_step = rec.param_grad_sq.get(name, {})
    outliers = None
    if outputs is not None:
        magnitude = outputs.abs()
        outliers = {
            "kurtosis": metrics.kurtosis(outputs),
            "channel_rms_kurtosis": metrics.channel_rms_kurtosis(outputs),
            "max_abs": magnitude.max().item(),
            "median_abs": magnitude.median().item(),
            # 4 significant digits: one number per channel, for the heat-map only
            "channel_max_over_median": [
                float(f"{v:.4g}") for v in metrics.channel_max_over_median(outputs).tolist()],
        }
    return {
        "index": index,
        "name": name,
        "class": cls,
        "input": None if inputs is None else metrics.moments(inputs),
        "output": None if outputs is None else metrics.moments(outputs),
        "angular_distance": angular,
        "grad": {
            "output_token_norm": None if grads is None else metrics.token_norm_mean(grads),
            "output_rms": None if grads is None else metrics.moments(grads)["rms"],
            "params": (sum(math.sqrt(v) for v in per_step.values()) / len(per_step)
                       if per_step else None),
        },
        "skip_loss_delta": None,
        "outliers": outliers,
        "max_attention_logit": max(rec.attention_logit[name], default=None),
    }


def _massive(rec: Recording, top_k: int) -> list[dict[str, Any]]:
    """The `top_k` largest |entries| over all block outputs, with their positions."""
    found = []
    for index, (name, _) in enumerate(rec.blocks):
        captures = rec.block_out[name]
        if not captures:
            continue
        values = torch.cat([c.values for c in captures])
        owner = [c for c in captures for _ in range(c.values.shape[0])]
        offsets = [i for c in captures for i in range(c.values.shape[0])]
        median = values.abs().median().item()
        for value, row, channel in metrics.top_k_abs(values, top_k):
            found.append({
                "value": value,
                "ratio_to_median": abs(value) / median if median > 0 else math.inf,
                "block": index,
                "name": name,
                **_position(owner[row], offsets[row]),
                "channel": channel,
            })
    found.sort(key=lambda entry: -abs(entry["value"]))
    return found[:top_k]


def _batch_stats(moments: list[BatchMoments], eps: float) -> dict[str, Any] | None:
    """Fluctuation of the batch mean / variance / quadratic mean against the running buffers."""
    if not moments:
        return None
    mean = torch.stack([m.mean for m in moments])  # (S, C)
    var = torch.stack([m.var for m in moments])
    running = {key: torch.stack([m.running[key] for m in moments])
               for key in moments[0].running}
    run_var = running.get("running_var")
    out: dict[str, Any] = {"steps": len(moments), "mean": None, "var": None, "mean_square": None}
    if "running_mean" in running:
        std = (run_var if run_var is not None else var).add(eps).sqrt()
        out["mean"] = metrics.fluctuation(mean, running["running_mean"], std)
    if run_var is not None:
        out["var"] = metrics.fluctuation(var, run_var, run_var + eps)
    if "running_phi" in running:
        phi = running["running_phi"]
        out["mean_square"] = metrics.fluctuation(var + mean.square(), phi, phi + eps)
    return out


def _scalars(rec: Recording, entry: NormEntry, inputs: Tensor | None) -> dict[str, float] | None:
    """The scalars the norm declares, at its last recorded call, and, for a norm that declares
    a `Squash`, the fraction of its inputs that saturate it (each row with its call's gain)."""
    calls = rec.scalars.get(entry.name)
    if not calls or inputs is None:
        return None
    out = dict(calls[-1])
    if entry.squash is not None:
        gains = [call[entry.squash.gain] for call in calls]
        per_row = torch.cat([torch.full((c.values.shape[0], 1), g, dtype=torch.float64)
                             for c, g in zip(rec.norm_in[entry.name], gains, strict=False)])
        out["saturation"] = metrics.saturation(entry.squash.fn, inputs[: per_row.shape[0]],
                                               per_row)
    return out


def _norm_entry(rec: Recording, entry: NormEntry, curve_channels: int, curve_points: int,
                seed: int) -> dict[str, Any]:
    inputs, outputs = _values(rec.norm_in[entry.name]), _values(rec.norm_out[entry.name])
    curve = None
    if inputs is not None and outputs is not None and inputs.shape == outputs.shape:
        curve = metrics.s_curve_sample(inputs, outputs, channels=curve_channels,
                                       points=curve_points, seed=seed)
    return {
        "name": entry.name,
        "class": entry.cls,
        "kind": entry.kind,
        "stats": entry.stats,
        "block": entry.block,
        "input": None if inputs is None else metrics.moments(inputs),
        "output": None if outputs is None else metrics.moments(outputs),
        "s_curve": curve,
        schema.SCALARS: _scalars(rec, entry, inputs),
        "batch_stats": _batch_stats(rec.batch_moments.get(entry.name, []),
                                    entry.eps if entry.eps is not None else DEFAULT_EPS),
    }


def summarize(
    recording: Recording,
    *,
    top_k: int = 10,
    curve_channels: int = 6,
    curve_points: int = 128,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The diagnostics dict of `recording` (schema `schema.VERSION`).

    Args:
        top_k: how many massive activations to list.
        curve_channels, curve_points, seed: the S-curve subsample of each norm.
        meta: free-form facts to store with the numbers (command line, data, preset).
    """
    if recording.steps == 0 and not any(recording.block_out.values()):
        raise ValueError("nothing was recorded: run the model inside `with Recorder(model):` "
                         "before summarizing")
    return schema.check({
        "schema": schema.SCHEMA,
        "version": schema.VERSION,
        "normlab_version": __version__,
        "model": {"class": recording.model_class, "parameters": recording.parameters},
        "meta": dict(meta or {}),
        "steps": recording.steps,
        "blocks": [_block_entry(recording, i, name, cls)
                   for i, (name, cls) in enumerate(recording.blocks)],
        "norms": [_norm_entry(recording, entry, curve_channels, curve_points, seed)
                  for entry in recording.norms],
        "massive_activations": _massive(recording, top_k),
        "skip": None,
    })
