"""PNG plots of a bench report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:
    from normlab.bench.report import Arm


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


def _curves(arms: list[Arm], kind: str, key: str, title: str, path: Path, smooth: bool) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.get_cmap("tab20")
    for i, arm in enumerate(arms):
        steps, values = _mean_curve(arm, kind, key)
        if steps:
            diverged = any(r.status == "diverged" for r in arm.runs)
            ax.plot(steps, _ema(values) if smooth else values, color=colors(i % 20),
                    linestyle="--" if diverged else "-",
                    label=arm.label + (" (diverged)" if diverged else ""))
    ax.set(xlabel="step", ylabel=key.replace("_", " "), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _bars(table: dict[str, Any], path: Path) -> Path:
    rows = [r for r in table["arms"] if r["val_loss_mean"] is not None]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.5))
    labels = [r["arm"] for r in rows][::-1]
    means = [r["val_loss_mean"] for r in rows][::-1]
    errors = [r["val_loss_std"] or 0.0 for r in rows][::-1]
    ax.barh(labels, means, xerr=errors, color="tab:blue", alpha=0.8)
    if means:
        ax.set_xlim(min(means) * 0.98 - max(errors), max(means) * 1.01 + max(errors))
    ax.set(xlabel="final validation loss (mean ± std over seeds)",
           title="Final validation loss (best at the top)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _relative(table: dict[str, Any], path: Path) -> Path:
    rows = table["arms"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.35 * len(rows) + 1.5), sharey=True)
    labels = [r["arm"] for r in rows][::-1]
    for ax, key, name in ((axes[0], "tokens_per_s_rel", "tokens/s"),
                          (axes[1], "mem_rel", "peak memory")):
        ax.barh(labels, [r[key] or 0.0 for r in rows][::-1], color="tab:green", alpha=0.8)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set(xlabel=f"{name} relative to {table['baseline'] or 'baseline (absent)'}")
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
    colors = plt.get_cmap("tab20")
    for i, row in enumerate(rows):
        style = {"color": "black", "linewidth": 2.6, "zorder": 3} if row["baseline"] else \
            {"color": colors(i % 20), "linewidth": 1.2, "alpha": 0.85}
        label = row["arm"] + (" (baseline)" if row["baseline"] else "") + \
            (" (diverged)" if row["diverged"] else "")
        for ax, key, first in ((left, "variance", 0), (right, "grad_norm", 1)):
            points = [(x, y) for x, y in enumerate(row[key], first) if y is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label,
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


def draw_all(arms: list[Arm], table: dict[str, Any], folder: Path) -> list[Path]:
    """Every plot of the report, written into `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        _curves(arms, "train", "loss", "Training loss (EMA 0.9, mean over seeds)",
                folder / "train_loss.png", smooth=True),
        _curves(arms, "eval", "val_loss", "Validation loss (mean over seeds)",
                folder / "val_loss.png", smooth=False),
        _bars(table, folder / "final_val_loss.png"),
        _relative(table, folder / "speed_memory.png"),
    ]
