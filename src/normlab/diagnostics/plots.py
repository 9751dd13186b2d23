"""PNG plots drawn from diagnostics JSON alone (never from a model or a recording).

    plot_all("out/diagnostics.json", "out/")                    # one run
    plot_all({"pre": "pre/diagnostics.json", "lns": "lns/diagnostics.json"}, "cmp/")

Curves against depth overlay every run given; the outlier heat-map and the S-curves are drawn
for the first run. Figures use matplotlib's Agg canvas directly (no pyplot, no global backend
change), so plotting works headless and from threads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from normlab.diagnostics import schema

Doc = dict[str, Any]
Runs = Mapping[str, Doc]
MAX_S_CURVE_PANELS = 4
DPI = 90


def load_runs(source: str | Path | Doc | Mapping[str, str | Path | Doc]) -> dict[str, Doc]:
    """{label: checked diagnostics dict} from a path, a dict, or a mapping label -> either."""
    if isinstance(source, str | Path):
        return {Path(source).parent.name or "run": schema.read(source)}
    if isinstance(source, dict) and "schema" in source:
        return {"run": schema.check(source)}
    return {label: schema.read(s) if isinstance(s, str | Path) else schema.check(s)
            for label, s in source.items()}


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI)
    return path


def _finite(values: list[Any]) -> bool:
    return any(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in values)


def _depth_panel(ax, runs: Runs, getter: Callable[[Doc], float | None], *, title: str,
                 ylabel: str, log: bool, start: Callable[[Doc], float | None] | None = None,
                 ) -> bool:
    """One curve per run of `getter(block)` against block index ℓ = 1..L, preceded by
    `start(first block)` at ℓ = 0 when given; False if nothing was drawn."""
    drawn = False
    for label, doc in runs.items():
        points = [(b["index"] + 1, getter(b)) for b in doc["blocks"]]
        if start is not None and doc["blocks"]:
            points.insert(0, (0, start(doc["blocks"][0])))
        points = [(x, y) for x, y in points if y is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
            drawn = True
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("block ℓ")
    ax.set_ylabel(ylabel)
    if log and drawn and _finite([y for line in ax.get_lines() for y in line.get_ydata()]):
        ax.set_yscale("log")
    if drawn and len(runs) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return drawn


def variance_vs_depth(runs: Runs, path: Path) -> Path:
    """Residual-stream variance and RMS of each block's output (embedding input at ℓ = 0)."""
    fig = Figure(figsize=(8, 3.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    for ax, key in ((left, "variance"), (right, "rms")):
        _depth_panel(ax, runs, lambda b, k=key: (b["output"] or {}).get(k),
                     start=lambda b, k=key: (b["input"] or {}).get(k),
                     title=f"residual stream {key} (ℓ = 0: input of block 1)", ylabel=key,
                     log=True)
    return _save(fig, path)


def grad_norm_vs_depth(runs: Runs, path: Path) -> Path:
    """‖∂L/∂θ_block‖ and the mean per-token ‖∂L/∂h_ℓ‖ of each block's output."""
    fig = Figure(figsize=(8, 3.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    _depth_panel(left, runs, lambda b: b["grad"]["params"], title="parameter gradient norm",
                 ylabel="‖∂L/∂θ_ℓ‖", log=True)
    _depth_panel(right, runs, lambda b: b["grad"]["output_token_norm"],
                 title="activation gradient (block output)", ylabel="mean_t ‖∂L/∂h_ℓ,t‖",
                 log=True)
    return _save(fig, path)


def angular_distance_vs_depth(runs: Runs, path: Path) -> Path:
    """Angular distance between each block's input and output, and the skip-a-block loss."""
    fig = Figure(figsize=(8, 3.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    _depth_panel(left, runs, lambda b: b["angular_distance"],
                 title="angular distance input → output", ylabel="arccos(cos)/π", log=False)
    if not _depth_panel(right, runs, lambda b: b["skip_loss_delta"],
                        title="loss change when the block is skipped", ylabel="Δ loss",
                        log=False):
        right.text(0.5, 0.5, "not measured", ha="center", va="center",
                   transform=right.transAxes)
    right.axhline(0.0, color="gray", linewidth=0.8)
    return _save(fig, path)


def outlier_heatmap(doc: Doc, path: Path, label: str = "") -> Path:
    """Blocks × channels of max_t |h| / median |h| (log colour scale)."""
    rows = [b["outliers"]["channel_max_over_median"] for b in doc["blocks"] if b["outliers"]]
    fig = Figure(figsize=(8, 3.6), layout="constrained")
    ax = fig.subplots()
    if rows and len({len(r) for r in rows}) == 1:
        flat = [v for r in rows for v in r if math.isfinite(v) and v > 0]
        # quiet channels (ratio < 0.1) all get the darkest colour: the outliers are the story
        scale = LogNorm(vmin=max(min(flat), 0.1), vmax=max(flat), clip=True) if flat else None
        image = ax.imshow(rows, aspect="auto", interpolation="nearest", cmap="magma", norm=scale,
                          extent=(-0.5, len(rows[0]) - 0.5, len(rows) + 0.5, 0.5))
        fig.colorbar(image, ax=ax, label="max |h| / median |h|")
    else:
        ax.text(0.5, 0.5, "no block outputs of one width", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("channel")
    ax.set_ylabel("block ℓ")
    ax.set_title(f"outlier channels {label}".strip(), fontsize=10)
    return _save(fig, path)


def _curve_norms(doc: Doc) -> list[Doc]:
    """Up to MAX_S_CURVE_PANELS norms with samples, spread over depth."""
    pool = [n for n in doc["norms"] if n["s_curve"]]
    if len(pool) <= MAX_S_CURVE_PANELS:
        return pool
    step = (len(pool) - 1) / (MAX_S_CURVE_PANELS - 1)
    return [pool[round(i * step)] for i in range(MAX_S_CURVE_PANELS)]


def s_curves(doc: Doc, path: Path, label: str = "") -> Path:
    """Norm output y_c against input x_c for a few channels of a few norms."""
    chosen = _curve_norms(doc)
    fig = Figure(figsize=(8, 2.6 if len(chosen) <= 2 else 5.2), layout="constrained")
    if not chosen:
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no norm recorded", ha="center", va="center", transform=ax.transAxes)
        return _save(fig, path)
    cols = min(2, len(chosen))
    axes = fig.subplots(math.ceil(len(chosen) / cols), cols, squeeze=False).ravel()
    for ax, norm in zip(axes, chosen, strict=False):
        curve = norm["s_curve"]
        for channel, xs, ys in zip(curve["channels"], curve["x"], curve["y"], strict=True):
            ax.scatter(xs, ys, s=3, alpha=0.6, label=f"c{channel}")
        scalars = norm[schema.SCALARS] or {}
        extra = "".join(f", {k}={v:.3g}" for k, v in scalars.items() if k != "saturation")
        ax.set_title(f"{norm['name']} ({norm['kind']}{extra})", fontsize=8)
        ax.set_xlabel("input x_c", fontsize=8)
        ax.set_ylabel("output y_c", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(chosen):]:
        ax.set_visible(False)
    if label:
        fig.suptitle(label, fontsize=10)
    return _save(fig, path)


def plot_all(source: str | Path | Doc | Mapping[str, str | Path | Doc],
             out_dir: str | Path) -> list[Path]:
    """Every plot for the run(s) in `source` (see `load_runs`), written to `out_dir`."""
    runs = load_runs(source)
    out = Path(out_dir)
    label, first = next(iter(runs.items()))
    return [
        variance_vs_depth(runs, out / "variance_vs_depth.png"),
        grad_norm_vs_depth(runs, out / "grad_norm_vs_depth.png"),
        angular_distance_vs_depth(runs, out / "angular_distance_vs_depth.png"),
        outlier_heatmap(first, out / "outlier_heatmap.png", label if len(runs) > 1 else ""),
        s_curves(first, out / "s_curves.png", label if len(runs) > 1 else ""),
    ]
