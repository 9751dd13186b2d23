"""The report's effective-learning-rate section, from the `weights` entries of the runs'
diagnostics.jsonl (bench/diagnostics.py; no model, no torch).

For each arm: at every diagnostics recording, the geometric mean over the Linear weight
matrices of lr/‖W‖² (the effective learning rate of a scale-invariant weight) and of ‖W‖_F,
averaged over seeds, and the share of matrices AdamP's test found scale-invariant at that step.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from normlab.bench.runs import Arm


def _geomean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and v > 0]
    return math.exp(statistics.fmean(map(math.log, values))) if values else None


def _curve(arm: Arm, pick) -> tuple[list[int], list[float]]:
    """Mean over the arm's runs of `pick(weights)` at each recorded step."""
    per_step: dict[int, list[float]] = {}
    for run in arm.runs:
        for record in run.diagnostics:
            value = pick(record["weights"]) if record.get("weights") else None
            if value is not None:
                per_step.setdefault(record["step"], []).append(value)
    steps = sorted(per_step)
    return steps, [statistics.fmean(per_step[s]) for s in steps]


def rows(arms: list[Arm]) -> list[dict[str, Any]]:
    """One row per arm that recorded weights: its curves and first/last values."""
    out = []
    for arm in arms:
        steps, elr = _curve(arm, lambda ws: _geomean([w["effective_lr"] for w in ws]))
        if not steps:
            continue
        _, norm = _curve(arm, lambda ws: _geomean([w["norm"] for w in ws]))
        _, share = _curve(arm, lambda ws: sum(w["scale_invariant"] is not None for w in ws)
                          / len(ws))
        out.append({"arm": arm.label, "steps": steps, "effective_lr": elr, "norm": norm,
                    "scale_invariant_share": share})
    return out


def section(table_rows: list[dict[str, Any]], plot: str | None) -> list[str]:
    """The "Effective learning rate" lines of report.md (nothing without recordings)."""
    if not table_rows:
        return []
    lines = ["## Effective learning rate", "",
             "lr/‖W‖² per Linear weight matrix (geometric mean over the matrices, mean over "
             "seeds), from the diagnostics recordings; for a weight followed by a norm it sets "
             "how fast a step turns W. ‖W‖ growing lowers it; NaP (`optim.name=adamw_nap`) "
             "holds ‖W‖, so it follows the schedule alone. \"scale-invariant\": the share of "
             "matrices AdamP's test (|cos(g, W)| < 0.1/√n) passed at the last recording.", ""]
    header = ["arm", "steps", "lr/‖W‖² first", "last", "‖W‖ first", "last", "scale-invariant"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in table_rows:
        lines.append("| " + " | ".join([
            f"`{r['arm']}`", f"{r['steps'][0]}–{r['steps'][-1]}",
            f"{r['effective_lr'][0]:.3g}", f"{r['effective_lr'][-1]:.3g}",
            f"{r['norm'][0]:.3g}", f"{r['norm'][-1]:.3g}",
            f"{100 * r['scale_invariant_share'][-1]:.0f} %"]) + " |")
    lines.append("")
    if plot:
        lines += [f"![{Path(plot).stem}]({plot})", ""]
    return lines
