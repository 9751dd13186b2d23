"""Learning-rate sweeps read back from runs: final loss against LR, and the LR sensitivity.

    curves = lr_curves(find_runs([Path("runs/lr-sweep-...")]))

LR sensitivity (Wortsman et al., "Small-scale proxies for large-scale Transformer training
instabilities", 2023, eq. in §3.2):

    LR-sens = E_η [ min(ℓ(η), ℓ₀) − ℓ* ],      ℓ* = min_η ℓ(η),

the expectation taken over the swept grid of learning rates (the paper's grid is log-spaced,
3e-4 to 3e-1; a sweep here should be log-spaced too, so that the plain mean over its points is
the expectation over log η). ℓ(η) is the final validation loss, ℓ₀ the loss at initialization,
and a diverged run counts as ℓ₀, so a model that trains at every rate of the grid scores 0 and
one that trains at a single rate scores about ℓ₀ − ℓ*. Here ℓ₀ is the training loss of the first
step (computed before the first update, so it is the same for every learning rate of a seed),
averaged over the curve's runs; with several seeds per rate, ℓ(η) is the mean over seeds of
each run's min(ℓ, ℓ₀).

A "curve" is the runs whose configs differ only in `optim.lr` and `train.seed`, labelled as the
report labels arms (placement/norm and whatever else differs).
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
from collections.abc import Sequence
from typing import Any

from normlab.bench.runs import Run, group_arms


def lr_sensitivity(losses: Sequence[float | None], init_loss: float) -> float | None:
    """E over the grid of min(ℓ, ℓ₀) − min over the grid of min(ℓ, ℓ₀); a None loss (a
    diverged run) counts as ℓ₀. None when no rate of the grid has a loss."""
    if not losses:
        raise ValueError("the learning-rate grid is empty")
    capped = [init_loss if loss is None else min(loss, init_loss) for loss in losses]
    if all(loss is None for loss in losses):
        return None
    return statistics.fmean(capped) - min(capped)


def _init_loss(runs: list[Run]) -> float | None:
    """Mean over runs of the first step's training loss (before any update)."""
    first = [r["loss"] for run in runs for r in run.records[:1]
             if r["kind"] == "train" and r["step"] == 1]
    return statistics.fmean(first) if first else None


def _point(lr: float, runs: list[Run], init_loss: float | None) -> dict[str, Any]:
    done = [r.summary["final_val_loss"] for r in runs if r.status == "completed"]
    diverged = [r.config["train"]["seed"] for r in runs if r.status == "diverged"]
    capped = [min(v, init_loss) for v in done] + [init_loss] * len(diverged) \
        if init_loss is not None else []
    return {"lr": lr, "val_loss_mean": statistics.fmean(done) if done else None,
            "loss": statistics.fmean(capped) if capped else None,
            "completed": len(done), "diverged_seeds": diverged, "runs": len(runs)}


def lr_curves(runs: list[Run]) -> list[dict[str, Any]]:
    """One record per curve with at least two learning rates: its points (lr, capped mean loss
    `loss`, mean over completed seeds, diverged seeds), ℓ₀, ℓ* and the LR sensitivity."""
    lr_of = {r.path: r.config["optim"]["lr"] for r in runs}
    blind = []
    for run in runs:
        config = copy.deepcopy(run.config)
        config["optim"]["lr"] = None
        blind.append(dataclasses.replace(run, config=config))
    curves = []
    for arm in group_arms(blind):
        by_lr: dict[float, list[Run]] = {}
        for run in arm.runs:
            by_lr.setdefault(lr_of[run.path], []).append(run)
        if len(by_lr) < 2:
            continue
        init = _init_loss(arm.runs)
        points = [_point(lr, by_lr[lr], init) for lr in sorted(by_lr)]
        measured = [p for p in points if p["loss"] is not None]
        sens = None
        if init is not None and measured:
            losses = [p["loss"] if p["completed"] else None for p in measured]
            sens = lr_sensitivity(losses, init)
        best = min(measured, key=lambda p: p["loss"]) if measured and sens is not None else None
        curves.append({
            "arm": arm.label, "norm": arm.runs[0].config["norm"]["name"],
            "placement": arm.runs[0].config["placement"]["name"],
            "init_loss": init, "best_loss": best["loss"] if best else None,
            "best_lr": best["lr"] if best else None, "lr_sensitivity": sens,
            "points": points,
        })
    return curves
