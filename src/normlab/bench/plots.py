"""PNG plots of a bench report (matplotlib, Agg backend: no display needed).

Every arm has one look across the plots: a colour family per norm (shades within it for arms
that differ in something else) and a marker per placement. Values with an uncertainty are drawn
as dots with their interval, never as bars from an axis that does not start at 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from normlab.bench.runs import Arm

FAMILIES = ("Blues", "Oranges", "Greens", "Reds", "Purples", "Greys", "YlOrBr", "PuRd",
            "BuGn", "GnBu")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def arm_styles(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{arm label: {"color", "marker"}}: a colour family per norm, a marker per placement, in
    the order the norms and placements first appear."""
    norms = list(dict.fromkeys(r["norm"] for r in rows))
    placements = list(dict.fromkeys(r["placement"] for r in rows))
    styles = {}
    for norm_index, norm in enumerate(norms):
        members = [r for r in rows if r["norm"] == norm]
        cmap = plt.get_cmap(FAMILIES[norm_index % len(FAMILIES)])
        for i, row in enumerate(members):
            shade = 0.85 - 0.45 * i / max(1, len(members) - 1) if len(members) > 1 else 0.7
            styles[row["arm"]] = {
                "color": cmap(shade),
                "marker": MARKERS[placements.index(row["placement"]) % len(MARKERS)],
            }
    return styles


def _mean_curve(arm: Arm, kind: str, key: str) -> tuple[list[int], list[float]]:
    """Mean over the arm's runs at each step every run logged (diverged runs stop early)."""
    per_step: dict[int, list[float]] = {}
    for run in arm.runs:
        for r in run.records:
            if r["kind"] == kind:
                per_step.setdefault(r["step"], []).append(r[key])
    steps = sorted(per_step)
    return steps, [sum(per_step[s]) / len(per_step[s]) for s in steps]


def _ema(values: list[float], beta: float = 0.9) -> list[float]:
    """Bias-corrected exponential moving average, to read noisy per-batch losses."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out


def _curves(arms: list[Arm], styles: dict[str, dict[str, Any]], kind: str, key: str,
            title: str, path: Path, smooth: bool) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5))
    for arm in arms:
        steps, values = _mean_curve(arm, kind, key)
        if steps:
            diverged = any(r.status == "diverged" for r in arm.runs)
            ax.plot(steps, _ema(values) if smooth else values, **styles[arm.label],
                    markevery=max(1, len(steps) // 6), markersize=4,
                    linestyle="--" if diverged else "-",
                    label=arm.label + (" (diverged)" if diverged else ""))
    ax.set(xlabel="step", ylabel=key.replace("_", " "), title=title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # an arm that diverged at once has no curve
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _dots(rows: list[dict[str, Any]], styles: dict[str, dict[str, Any]], ax, value: str,
          low, high) -> None:
    """One dot per row (best at the top) with a horizontal interval from low(row) to high(row)."""
    for y, row in enumerate(reversed(rows)):
        lo, hi = low(row), high(row)
        style = styles[row["arm"]]
        if lo is not None and hi is not None:
            ax.plot([lo, hi], [y, y], color=style["color"], linewidth=2, alpha=0.8)
        ax.plot(row[value], y, linestyle="none", markersize=7, markeredgecolor="black",
                markeredgewidth=0.5, **style)
    ax.set_yticks(range(len(rows)), [r["arm"] for r in reversed(rows)])
    ax.grid(axis="x", alpha=0.3)


def _final_loss(table: dict[str, Any], styles, path: Path) -> Path:
    rows = [r for r in table["arms"] if r["val_loss_mean"] is not None]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.5))

    def low(r):
        return None if r["val_loss_ci95"] is None else r["val_loss_mean"] - r["val_loss_ci95"]

    def high(r):
        return None if r["val_loss_ci95"] is None else r["val_loss_mean"] + r["val_loss_ci95"]

    _dots(rows, styles, ax, "val_loss_mean", low, high)
    ax.set(xlabel="final validation loss: mean over seeds, line = 95 % CI (none for 1 seed)",
           title="Final validation loss (ranked by mean, best at the top)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _relative(table: dict[str, Any], styles, path: Path) -> Path:
    rows = table["arms"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.35 * len(rows) + 1.5), sharey=True)
    speed = [r if r["speed_ratio"] is not None else {**r, "speed_ratio": float("nan")}
             for r in rows]
    _dots(speed, styles, axes[0], "speed_ratio", lambda r: r["speed_ratio_low"],
          lambda r: r["speed_ratio_high"])
    memory = [{**r, "mem_ratio": r["mem_ratio"] if r["mem_ratio"] is not None
               else float("nan")} for r in rows]
    _dots(memory, styles, axes[1], "mem_ratio", lambda r: None, lambda r: None)
    base = table["baseline"] or "baseline (absent)"
    axes[0].set(xlabel=f"tokens/s relative to {base}\n(median, line = range over the "
                       "back-to-back timing pairs)")
    axes[1].set(xlabel=f"peak tensor memory relative to {base}")
    for ax in axes:
        ax.axvline(1.0, color="black", linewidth=0.8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def normalization(table: dict[str, Any], path: Path) -> Path | None:
    """Residual-stream variance and block gradient norm against depth, one line per arm, from
    `table["normalization"]` (report.py); the baseline arm in bold black. None without data."""
    rows = table.get("normalization") or []
    if not rows:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = arm_styles(table["arms"])
    for row in rows:
        look = styles[row["arm"]]
        style = {"color": "black", "linewidth": 2.6, "zorder": 3} if row["baseline"] else \
            {"color": look["color"], "linewidth": 1.2, "alpha": 0.85}
        label = row["arm"] + (" (baseline)" if row["baseline"] else "") + \
            (" (diverged)" if row["diverged"] else "")
        for ax, key, first in ((left, "variance", 0), (right, "grad_norm", 1)):
            points = [(x, y) for x, y in enumerate(row[key], first) if y is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker=look["marker"], markersize=3,
                        label=label,
                        linestyle="--" if row["diverged"] else "-", **style)
    left.set(xlabel="block ℓ (0: input of block 1)", ylabel="variance",
             title="Residual-stream variance vs depth")
    right.set(xlabel="block ℓ", ylabel="‖∂L/∂θ_ℓ‖", title="Block parameter gradient norm vs depth")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if any(y > 0 for line in ax.get_lines() for y in line.get_ydata()):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle("What normalization did (last diagnostics recording, mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def lr_sensitivity(table: dict[str, Any], path: Path) -> Path | None:
    """Final validation loss against the learning rate (log axis), one curve per arm, from
    `table["lr_sweep"]` (bench/lr_sensitivity.py): the mean over completed seeds, a red cross
    at ℓ₀ where a seed diverged. None without an LR sweep."""
    curves = table.get("lr_sweep") or []
    if not curves:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    styles = arm_styles(curves)
    fig, ax = plt.subplots(figsize=(8, 5))
    crossed = False
    for curve in curves:
        points = [(p["lr"], p["val_loss_mean"]) for p in curve["points"]
                  if p["val_loss_mean"] is not None]
        sens = curve["lr_sensitivity"]
        label = curve["arm"] + ("" if sens is None else f" (LR sensitivity {sens:.3f})")
        if points:
            ax.plot(*zip(*points, strict=True), label=label, markersize=5,
                    **styles[curve["arm"]])
        diverged = [p["lr"] for p in curve["points"] if p["diverged_seeds"]]
        if diverged and curve["init_loss"] is not None:
            ax.plot(diverged, [curve["init_loss"]] * len(diverged), linestyle="none",
                    marker="x", color="red", markersize=9, markeredgewidth=2,
                    label=None if crossed else "diverged (drawn at ℓ₀)")
            crossed = True
    ax.set_xscale("log")
    ax.set(xlabel="peak learning rate", ylabel="final validation loss (mean over seeds)",
           title="Learning-rate sensitivity")
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def draw_all(arms: list[Arm], table: dict[str, Any], folder: Path) -> list[Path]:
    """Every plot of the report, written into `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    styles = arm_styles(table["arms"])
    return [
        _curves(arms, styles, "train", "loss", "Training loss (EMA 0.9, mean over seeds)",
                folder / "train_loss.png", smooth=True),
        _curves(arms, styles, "eval", "val_loss", "Validation loss (mean over seeds)",
                folder / "val_loss.png", smooth=False),
        _final_loss(table, styles, folder / "final_val_loss.png"),
        _relative(table, styles, folder / "speed_memory.png"),
    ]


def effective_lr(rows: list[dict[str, Any]], styles: dict[str, dict[str, Any]],
                 path: Path) -> Path | None:
    """lr/‖W‖² and ‖W‖_F (geometric means over the weight matrices) against the step, one
    line per arm, from bench/effective_lr.py's rows. None without rows."""
    if not rows:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for row in rows:
        look = styles.get(row["arm"], {})
        for ax, key in ((left, "effective_lr"), (right, "norm")):
            ax.plot(row["steps"], row[key], markersize=3, label=row["arm"], **look)
    left.set(xlabel="step", ylabel="lr / ‖W‖²", yscale="log",
             title="Effective learning rate (geometric mean over matrices)")
    right.set(xlabel="step", ylabel="‖W‖_F", title="Weight norm (geometric mean over matrices)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
