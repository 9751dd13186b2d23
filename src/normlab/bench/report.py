"""The comparison report, redrawn from run directories' JSON alone (no model, no torch).

    write_report([Path("runs/quick-...")], Path("runs/quick-..."))

Writes report.md (a table sorted best first), report.json (the same numbers) and plots/*.png:
training and validation loss curves per arm, final validation loss mean ± standard deviation
over seeds, and tokens/s and peak memory relative to the pre-LN layernorm baseline. Runs are
grouped into arms by their config without `train.seed` (and `train.diagnose_every`, which
changes no number of the run); diverged and failed runs are flagged. Runs that recorded
diagnostics.jsonl add a "What normalization did" section: residual-stream variance and
block gradient norms against depth at each arm's last recording.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from normlab.bench.diagnostics import FILE as DIAGNOSTICS
from normlab.bench.metrics import read_metrics, summarize, write_atomic

BASELINE = ("pre", "layernorm")


@dataclass
class Run:
    """One run directory as read back from disk."""

    path: Path
    config: dict[str, Any]
    records: list[dict[str, Any]]
    status: str
    summary: dict[str, Any]
    error: str | None = None
    diagnostics: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Arm:
    """The runs of one configuration over seeds."""

    label: str
    runs: list[Run] = field(default_factory=list)

    @property
    def completed(self) -> list[Run]:
        return [r for r in self.runs if r.status == "completed"]


def read_run(path: Path) -> Run:
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    records = read_metrics(path / "metrics.jsonl")
    summary = summarize(records)
    saved = json.loads((path / "summary.json").read_text()) if (path / "summary.json").is_file() \
        else {}
    if summary["diverged_step"] is not None:
        status = "diverged"
    else:
        status = saved.get("status", "incomplete")
    return Run(path, config, records, status, summary, saved.get("error"),
               read_metrics(path / DIAGNOSTICS))


def find_runs(paths: list[Path]) -> list[Run]:
    """Every run under `paths`: a run directory (config.json) or a sweep (arms/*/config.json)."""
    runs = []
    for path in map(Path, paths):
        if (path / "config.json").is_file():
            runs.append(read_run(path))
        elif (path / "arms").is_dir():
            runs += [read_run(p) for p in sorted((path / "arms").iterdir())
                     if (p / "config.json").is_file()]
        else:
            raise ValueError(f"{path} is neither a run directory (config.json) nor a sweep "
                             "directory (arms/)")
    if not runs:
        raise ValueError(f"no runs found under {[str(p) for p in paths]}")
    return runs


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and key not in ("kwargs",):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = json.dumps(value, sort_keys=True) if isinstance(value, dict) \
                else value
    return out


def group_arms(runs: list[Run]) -> list[Arm]:
    """Runs grouped by config minus the seed; labelled placement/norm plus what else differs."""
    flats = [_flat(r.config) for r in runs]
    ignored = {"train.seed", "data.cache_dir", "train.diagnose_every"}
    differing = sorted(k for k in set().union(*flats) - ignored
                       if len({json.dumps(f.get(k)) for f in flats}) > 1
                       and k not in ("placement.name", "norm.name"))
    arms: dict[str, Arm] = {}
    for run, flat in zip(runs, flats, strict=True):
        label = f"{flat['placement.name']}/{flat['norm.name']}"
        extra = ",".join(f"{k}={flat.get(k)}" for k in differing)
        label = f"{label} [{extra}]" if extra else label
        arms.setdefault(label, Arm(label)).runs.append(run)
    return list(arms.values())


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


# Student's t 0.975 quantiles for 1..30 degrees of freedom; past 30 the normal 1.960 is used.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def ci95_half_width(values: list[float]) -> float | None:
    """Half-width of the 95 % t-interval of the mean, t(0.975, n-1)·s/√n; None below 2 values."""
    n = len(values)
    if n < 2:
        return None
    t = _T975[n - 2] if n - 1 <= len(_T975) else 1.960
    return t * statistics.stdev(values) / n**0.5


def arm_row(arm: Arm, baseline: Arm | None) -> dict[str, Any]:
    losses = [r.summary["final_val_loss"] for r in arm.completed]
    speed = _mean([r.summary["tokens_per_s"] for r in arm.runs if r.summary["tokens_per_s"]])
    memory = _mean([r.summary["peak_mem_bytes"] for r in arm.runs if r.summary["peak_mem_bytes"]])
    base_speed = base_mem = None
    if baseline is not None:
        base_speed = _mean([r.summary["tokens_per_s"] for r in baseline.runs
                            if r.summary["tokens_per_s"]])
        base_mem = _mean([r.summary["peak_mem_bytes"] for r in baseline.runs
                          if r.summary["peak_mem_bytes"]])
    row = {
        "arm": arm.label,
        "seeds": [r.config["train"]["seed"] for r in arm.runs],
        "completed": len(arm.completed),
        "val_loss_mean": _mean(losses),
        "val_loss_std": statistics.stdev(losses) if len(losses) > 1 else None,
        "val_loss_ci95": ci95_half_width(losses),
        "val_loss_min": min(losses, default=None),
        "val_loss_max": max(losses, default=None),
        "tokens_per_s": speed,
        "tokens_per_s_rel": speed / base_speed if speed and base_speed else None,
        "peak_mem_bytes": memory,
        "mem_rel": memory / base_mem if memory and base_mem else None,
        "diverged": [{"seed": r.config["train"]["seed"], "step": r.summary["diverged_step"]}
                     for r in arm.runs if r.status == "diverged"],
        "failed": [{"seed": r.config["train"]["seed"], "status": r.status, "error": r.error}
                   for r in arm.runs if r.status not in ("completed", "diverged")],
        "runs": [str(r.path) for r in arm.runs],
    }
    accs = [r.summary["final_val_acc"] for r in arm.completed if "final_val_acc" in r.summary]
    if accs:
        row["val_acc_mean"] = _mean(accs)
    return row


def last_profile(run: Run) -> tuple[int, list[float | None], list[float | None]] | None:
    """(step, residual-stream variance at ℓ = 0..L, block gradient norm at ℓ = 1..L) of the
    run's last diagnostics recording; ℓ = 0 is the input of block 1. None without one."""
    if not run.diagnostics:
        return None
    last = run.diagnostics[-1]
    blocks = last["blocks"]
    variance = [(b["input"] or {}).get("variance") for b in blocks[:1]]
    variance += [(b["output"] or {}).get("variance") for b in blocks]
    return last["step"], variance, [b["grad"]["params"] for b in blocks]


def _column_means(rows: list[list[float | None]]) -> list[float | None]:
    """Per position, the mean of the rows' non-null values (None where all are null)."""
    width = max(map(len, rows), default=0)
    return [_mean([r[i] for r in rows if i < len(r) and r[i] is not None]) for i in range(width)]


def normalization_row(arm: Arm, baseline: Arm | None) -> dict[str, Any] | None:
    """The depth profiles of an arm's last recordings, averaged over its runs' seeds."""
    profiles = [p for p in map(last_profile, arm.runs) if p is not None]
    if not profiles:
        return None
    return {
        "arm": arm.label,
        "baseline": arm is baseline,
        "steps": [step for step, _, _ in profiles],
        "diverged": any(r.status == "diverged" for r in arm.runs),
        "variance": _column_means([variance for _, variance, _ in profiles]),
        "grad_norm": _column_means([grads for _, _, grads in profiles]),
    }


def build_table(runs: list[Run]) -> dict[str, Any]:
    arms = group_arms(runs)
    candidates = [a for a in arms if a.label.split(" ")[0] == "/".join(BASELINE)]
    # the first pre/layernorm arm that completed a run (others may differ in e.g. the lr)
    baseline = next((a for a in candidates if a.completed), candidates[0] if candidates else None)
    rows = [arm_row(a, baseline) for a in arms]
    rows.sort(key=lambda r: (r["val_loss_mean"] is None, r["val_loss_mean"] or math.inf))
    order = {r["arm"]: i for i, r in enumerate(rows)}
    profiles = [p for p in (normalization_row(a, baseline) for a in arms) if p is not None]
    return {"baseline": baseline.label if baseline else None, "arms": rows,
            "normalization": sorted(profiles, key=lambda p: order[p["arm"]])}


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "—" if value is None else format(value, spec)


def _status(row: dict[str, Any]) -> str:
    notes = []
    n = len(row["seeds"])
    if row["diverged"]:
        steps = ", ".join(f"seed {d['seed']} @ step {d['step']}" for d in row["diverged"])
        notes.append(f"**diverged** {len(row['diverged'])}/{n} ({steps})")
    if row["failed"]:
        notes.append(f"**{row['failed'][0]['status']}** {len(row['failed'])}/{n}")
    return "; ".join(notes) or "ok"


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return top / bottom if top is not None and bottom else None


def normalization_section(table: dict[str, Any], plot: str | None) -> list[str]:
    """The "What normalization did" lines of report.md, from `table["normalization"]`."""
    rows = table.get("normalization") or []
    lines = ["## What normalization did", ""]
    if not rows:
        return [*lines, "No run recorded diagnostics; set `train.diagnose_every` (e.g. "
                "`--set train.diagnose_every=40`) to see them here.", ""]
    lines += ["Residual-stream variance and the gradient norm ‖∂L/∂θ‖ of each block's "
              "parameters against depth, at each arm's last diagnostics recording "
              "(diagnostics.jsonl; mean over seeds); the table gives block 1 and the last block "
              "L, the plot every block (ℓ = 0 is the input of block 1, the embeddings). Under "
              "Pre-LN nothing normalizes the stream itself, so its variance grows with depth; a "
              "norm on the residual path (Post-LN) keeps it flat.", ""]
    header = ["arm", "step", "variance after block 1", "after block L", "× (L / 1)",
              "‖∂L/∂θ‖ block 1", "‖∂L/∂θ‖ block L", "× (L / 1)"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        variance, grads = r["variance"][1:] or [None], r["grad_norm"] or [None]
        first, last, g_first, g_last = variance[0], variance[-1], grads[0], grads[-1]
        name = f"**`{r['arm']}`** (baseline)" if r["baseline"] else f"`{r['arm']}`"
        name += " (diverged)" if r["diverged"] else ""
        steps = ", ".join(str(s) for s in sorted(set(r["steps"])))
        lines.append("| " + " | ".join([
            name, steps, _fmt(first, ".4g"), _fmt(last, ".4g"), _fmt(_ratio(last, first), ".2f"),
            _fmt(g_first, ".3g"), _fmt(g_last, ".3g"), _fmt(_ratio(g_last, g_first), ".2f"),
        ]) + " |")
    lines.append("")
    if plot:
        lines += [f"![{Path(plot).stem}]({plot})", ""]
    return lines


def markdown(table: dict[str, Any], plots: list[str], normalization_plot: str | None = None,
             ) -> str:
    rows = table["arms"]
    lines = ["# normlab bench report", ""]
    best = rows[0] if rows and rows[0]["val_loss_mean"] is not None else None
    if best:
        lines.append(f"**Best arm: `{best['arm']}`**, final validation loss "
                     f"{_fmt(best['val_loss_mean'])} (lower is better).")
    else:
        lines.append("**No arm completed.**")
    base = table["baseline"]
    lines += ["", f"Speed and memory are relative to `{base}`." if base else
              "No pre/layernorm baseline among the runs: relative columns are empty.", ""]
    has_acc = any("val_acc_mean" in r for r in rows)
    header = ["#", "arm", "final val loss (mean ± std)", "95 % CI", "min – max", "n"]
    header += ["val acc"] if has_acc else []
    header += ["tokens/s", "× speed", "peak mem (MiB)", "× mem", "status"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, r in enumerate(rows, 1):
        spread = f" ± {_fmt(r['val_loss_std'])}" if r["val_loss_std"] is not None else ""
        ci = r["val_loss_ci95"]
        interval = "—" if ci is None else (
            f"{_fmt(r['val_loss_mean'] - ci)} – {_fmt(r['val_loss_mean'] + ci)}")
        cells = [str(i), f"`{r['arm']}`", _fmt(r["val_loss_mean"]) + spread, interval,
                 f"{_fmt(r['val_loss_min'])} – {_fmt(r['val_loss_max'])}",
                 f"{r['completed']}/{len(r['seeds'])}"]
        cells += [_fmt(r.get("val_acc_mean"), ".3f")] if has_acc else []
        mem = r["peak_mem_bytes"] / 2**20 if r["peak_mem_bytes"] else None
        cells += [_fmt(r["tokens_per_s"], ",.0f"), _fmt(r["tokens_per_s_rel"], ".2f"),
                  _fmt(mem, ",.1f"), _fmt(r["mem_rel"], ".2f"), _status(r)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Final validation loss: the last evaluation of each completed run; std is the "
              "sample standard deviation over seeds and the 95 % CI the t-interval of the mean "
              "(t(0.975, n−1)·std/√n). Peak memory is CUDA max_memory_allocated, or "
              "the process RSS on CPU (which includes the Python and torch baseline).", ""]
    lines += [f"![{Path(p).stem}]({p})" for p in plots]
    lines += ["", *normalization_section(table, normalization_plot)]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_report(paths: list[Path], out: Path) -> dict[str, Any]:
    """Read every run under `paths` and write report.md, report.json and plots/ into `out`."""
    from normlab.bench import plots

    runs = find_runs(paths)
    table = build_table(runs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    drawn = plots.draw_all(group_arms(runs), table, out / "plots")
    profile = plots.normalization(table, out / "plots" / "normalization.png")
    write_atomic(out / "report.json", json.dumps(table, indent=2) + "\n")
    write_atomic(out / "report.md", markdown(
        table, [p.relative_to(out).as_posix() for p in drawn],
        profile.relative_to(out).as_posix() if profile else None))
    return table
