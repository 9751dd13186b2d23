"""The comparison report, redrawn from run directories' JSON alone (no model, no torch).

    write_report([Path("runs/quick-...")], Path("runs/quick-..."))

Writes report.md (a table ranked by mean final validation loss), report.json (the same
numbers) and plots/*.png: training and validation loss curves per arm, final validation loss
as dots with 95 % intervals over seeds, and tokens/s and peak tensor memory relative to the
pre-LN layernorm baseline from the sweep's timing pass (bench/timing.py), with their range over
its back-to-back (arm, baseline) pairs. An arm is named best only when its interval lies
below the runner-up's (`verdict`); otherwise the report says that no arm is better than the
noise. Runs are grouped into arms by
their config without `train.seed` (and `train.diagnose_every`, which changes no number of the
run); diverged and failed runs are flagged. Runs that recorded
diagnostics.jsonl add a "What normalization did" section: residual-stream variance and
block gradient norms against depth at each arm's last recording. Runs that sweep `optim.lr`
add a "Learning-rate sensitivity" section: final loss against learning rate per arm and the
LR sensitivity of Wortsman et al. 2023 (bench/lr_sensitivity.py).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from normlab.bench import effective_lr, plots
from normlab.bench.lr_sensitivity import lr_curves
from normlab.bench.metrics import write_atomic
from normlab.bench.runs import BASELINE, Arm, Run, find_runs, group_arms


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


def speed_and_memory(arm: Arm, baseline: Arm | None) -> dict[str, Any]:
    """The arm's speed and memory relative to the baseline, from the timing pass of its sweep
    (bench/timing.py): the tokens/s ratio of each adjacent (arm, baseline) pair, their median
    and range, and whether that range contains 1 (a difference inside the noise). Empty
    without a timing pass that timed this baseline."""
    run = arm.runs[0]
    if baseline is None or run.timing is None:
        return {}
    if run.timing.get("baseline") not in {r.name for r in baseline.runs}:
        return {}
    mine, base = run.timing["arms"].get(run.name), run.timing["arms"][run.timing["baseline"]]
    if mine is None or not mine["baseline_tokens_per_s"]:
        return {}
    ratios = [a / b for a, b in zip(mine["tokens_per_s"], mine["baseline_tokens_per_s"],
                                    strict=True)]
    peak, base_peak = mine["peak_tensor_bytes"], base["peak_tensor_bytes"]
    return {
        "tokens_per_s": statistics.median(mine["tokens_per_s"]),
        "speed_ratio": statistics.median(ratios), "speed_ratio_low": min(ratios),
        "speed_ratio_high": max(ratios), "speed_within_noise": min(ratios) <= 1.0 <= max(ratios),
        "timing_rounds": len(ratios), "peak_tensor_bytes": peak,
        "mem_ratio": peak / base_peak if peak and base_peak else None,
    }


def arm_row(arm: Arm, baseline: Arm | None) -> dict[str, Any]:
    losses = [r.summary["final_val_loss"] for r in arm.completed]
    row = {
        "arm": arm.label,
        "norm": arm.runs[0].config["norm"]["name"],
        "placement": arm.runs[0].config["placement"]["name"],
        "seeds": [r.config["train"]["seed"] for r in arm.runs],
        "completed": len(arm.completed),
        "val_loss_mean": _mean(losses),
        "val_loss_std": statistics.stdev(losses) if len(losses) > 1 else None,
        "val_loss_ci95": ci95_half_width(losses),
        "val_loss_min": min(losses, default=None),
        "val_loss_max": max(losses, default=None),
        "tokens_per_s": None, "speed_ratio": None, "speed_ratio_low": None,
        "speed_ratio_high": None, "speed_within_noise": None, "timing_rounds": 0,
        "peak_tensor_bytes": None, "mem_ratio": None,
        **speed_and_memory(arm, baseline),
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


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether the first-ranked arm is better than the runner-up beyond the noise: only when
    both have a 95 % interval and the intervals do not overlap."""
    ranked = [r for r in rows if r["val_loss_mean"] is not None]
    if not ranked:
        return {"best": None, "reason": "no arm completed"}
    if len(ranked) == 1:
        return {"best": ranked[0]["arm"], "reason": "the only arm that completed"}
    first, second = ranked[:2]
    n = min(first["completed"], second["completed"])
    if first["val_loss_ci95"] is None or second["val_loss_ci95"] is None:
        return {"best": None, "reason": f"one completed seed per arm gives no interval (n = {n})"}
    apart = first["val_loss_mean"] + first["val_loss_ci95"] < \
        second["val_loss_mean"] - second["val_loss_ci95"]
    if apart:
        return {"best": first["arm"], "reason": "its 95 % interval lies below the runner-up's"}
    return {"best": None, "reason": f"the 95 % intervals of the first two overlap (n = {n})"}


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


def attention_logit_growth(run: Run) -> tuple[float, float] | None:
    """(first, last) recording's largest attention logit over the blocks; None without one."""
    peaks = [max((v for b in d["blocks"] if (v := b.get("max_attention_logit")) is not None),
                 default=None) for d in run.diagnostics]
    peaks = [p for p in peaks if p is not None]
    return (peaks[0], peaks[-1]) if peaks else None


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
        "attention_logit": _column_means([list(g) for g in map(attention_logit_growth, arm.runs)
                                          if g is not None]) or [None, None],
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
            "verdict": verdict(rows),
            "normalization": sorted(profiles, key=lambda p: order[p["arm"]]),
            "lr_sweep": lr_curves(runs)}


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
              "norm on the residual path (Post-LN) keeps it flat. The last column is the "
              "largest attention logit q·k/√d over the blocks at the first and the last "
              "recording: its growth is the attention-entropy collapse that QK-norm prevents.",
              ""]
    header = ["arm", "step", "variance after block 1", "after block L", "× (L / 1)",
              "‖∂L/∂θ‖ block 1", "‖∂L/∂θ‖ block L", "× (L / 1)", "max attention logit"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        variance, grads = r["variance"][1:] or [None], r["grad_norm"] or [None]
        first, last, g_first, g_last = variance[0], variance[-1], grads[0], grads[-1]
        name = f"**`{r['arm']}`** (baseline)" if r["baseline"] else f"`{r['arm']}`"
        name += " (diverged)" if r["diverged"] else ""
        steps = ", ".join(str(s) for s in sorted(set(r["steps"])))
        logit_first, logit_last = r.get("attention_logit") or (None, None)
        logits = "—" if logit_last is None else f"{logit_first:.3g} → {logit_last:.3g}"
        lines.append("| " + " | ".join([
            name, steps, _fmt(first, ".4g"), _fmt(last, ".4g"), _fmt(_ratio(last, first), ".2f"),
            _fmt(g_first, ".3g"), _fmt(g_last, ".3g"), _fmt(_ratio(g_last, g_first), ".2f"),
            logits,
        ]) + " |")
    lines.append("")
    if plot:
        lines += [f"![{Path(plot).stem}]({plot})", ""]
    return lines


def _interval(row: dict[str, Any]) -> str:
    ci = row["val_loss_ci95"]
    if ci is None:
        return "—"
    return f"{_fmt(row['val_loss_mean'] - ci)} – {_fmt(row['val_loss_mean'] + ci)}"


def _headline(table: dict[str, Any]) -> list[str]:
    """The verdict line: a best arm only when it is better than the noise."""
    rows, verdict = table["arms"], table["verdict"]
    if verdict["best"] is not None:
        best = next(r for r in rows if r["arm"] == verdict["best"])
        return [f"**Best arm: `{best['arm']}`**, final validation loss "
                f"{_fmt(best['val_loss_mean'])} (95 % CI {_interval(best)}; lower is better): "
                f"{verdict['reason']}."]
    ranked = [r for r in rows if r["val_loss_mean"] is not None]
    if not ranked:
        return ["**No arm completed.**"]
    n = min(r["completed"] for r in ranked[:2])
    top = "; ".join(f"`{r['arm']}` {_fmt(r['val_loss_mean'])} (CI {_interval(r)})"
                    for r in ranked[:2])
    return [f"**No arm is better than the noise at {n} seed{'s' if n != 1 else ''}**: "
            f"{verdict['reason']}. First two: {top}. Rank order below is by the mean only; "
            "add seeds (`--set train.seed=[0,1,2]`) to separate them."]


def _speed(row: dict[str, Any]) -> str:
    if row["speed_ratio"] is None:
        return "—"
    text = (f"{row['speed_ratio']:.2f} ({row['speed_ratio_low']:.2f}–"
            f"{row['speed_ratio_high']:.2f})")
    return text + " ≈ noise" if row["speed_within_noise"] else text


def lr_sweep_section(table: dict[str, Any], plot: str | None) -> list[str]:
    """The "Learning-rate sensitivity" lines of report.md ([] without an LR sweep)."""
    curves = table.get("lr_sweep") or []
    if not curves:
        return []
    lines = ["## Learning-rate sensitivity", "",
             "Final validation loss against the learning rate, one curve per arm (mean over "
             "seeds; a diverged run counts as the loss at initialization ℓ₀). LR sensitivity "
             "(Wortsman et al. 2023) = mean over the grid of min(ℓ(η), ℓ₀) − ℓ*, with ℓ* the "
             "best loss of the curve: 0 when the arm trains equally well at every rate, about "
             "ℓ₀ − ℓ* when it trains at one rate only. It is a mean over the grid's points, so "
             "the grid should be log-spaced.", ""]
    rates = sorted({p["lr"] for c in curves for p in c["points"]})
    header = ["arm", "LR sensitivity", "ℓ* (at lr)", "ℓ₀", *(f"lr {r:.3g}" for r in rates)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in curves:
        at = {p["lr"]: p for p in c["points"]}
        cells = [f"`{c['arm']}`", _fmt(c["lr_sensitivity"]),
                 f"{_fmt(c['best_loss'])} ({_fmt(c['best_lr'], '.3g')})", _fmt(c["init_loss"])]
        for rate in rates:
            point = at.get(rate)
            text = "—" if point is None else _fmt(point["val_loss_mean"])
            if point is not None and point["diverged_seeds"]:
                text += f" (diverged {len(point['diverged_seeds'])}/{point['runs']})"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if plot:
        lines += [f"![{Path(plot).stem}]({plot})", ""]
    return lines


def markdown(table: dict[str, Any], plots: list[str], normalization_plot: str | None = None,
             lr_plot: str | None = None, effective_lr_plot: str | None = None) -> str:
    rows = table["arms"]
    lines = ["# normlab bench report", "", *_headline(table), ""]
    base = table["baseline"]
    timed = any(r["timing_rounds"] for r in rows)
    if not base:
        lines += ["No pre/layernorm baseline among the runs: relative columns are empty.", ""]
    elif not timed:
        lines += ["No timing pass (it runs at the end of `normlab bench`): speed and memory "
                  "columns are empty.", ""]
    else:
        rounds = max(r["timing_rounds"] for r in rows)
        lines += [f"Speed and memory are relative to `{base}`, from a timing pass apart from "
                  f"training: the median tokens/s ratio of {rounds} back-to-back (arm, baseline) "
                  "pairs and its range; \"≈ noise\" marks a range that contains 1 (the baseline's "
                  "own row, timed against itself, shows the noise floor).", ""]
    has_acc = any("val_acc_mean" in r for r in rows)
    header = ["#", "arm", "final val loss (mean ± std)", "95 % CI", "min – max", "n"]
    header += ["val acc"] if has_acc else []
    header += ["tokens/s", "× speed (range)", "peak tensors (MiB)", "× mem", "status"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, r in enumerate(rows, 1):
        spread = f" ± {_fmt(r['val_loss_std'])}" if r["val_loss_std"] is not None else ""
        cells = [str(i), f"`{r['arm']}`", _fmt(r["val_loss_mean"]) + spread, _interval(r),
                 f"{_fmt(r['val_loss_min'])} – {_fmt(r['val_loss_max'])}",
                 f"{r['completed']}/{len(r['seeds'])}"]
        cells += [_fmt(r.get("val_acc_mean"), ".3f")] if has_acc else []
        mem = r["peak_tensor_bytes"] / 2**20 if r["peak_tensor_bytes"] else None
        cells += [_fmt(r["tokens_per_s"], ",.0f"), _speed(r), _fmt(mem, ",.2f"),
                  _fmt(r["mem_ratio"], ".2f"), _status(r)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Final validation loss: the last evaluation of each completed run; std is the "
              "sample standard deviation over seeds and the 95 % CI the t-interval of the mean "
              "(t(0.975, n−1)·std/√n). Peak tensors: the most memory the tensors of one "
              "training step hold (CUDA max_memory_allocated; PyTorch's MemTracker on CPU), "
              "not the process's resident set.", ""]
    lines += [f"![{Path(p).stem}]({p})" for p in plots]
    lines += ["", *normalization_section(table, normalization_plot)]
    lines += lr_sweep_section(table, lr_plot)
    lines += effective_lr.section(table.get("effective_lr") or [], effective_lr_plot)
    return "\n".join(lines).rstrip("\n") + "\n"


def write_report(paths: list[Path], out: Path) -> dict[str, Any]:
    """Read every run under `paths` and write report.md, report.json and plots/ into `out`."""
    runs = find_runs(paths)
    table = build_table(runs)
    table["effective_lr"] = effective_lr.rows(group_arms(runs))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    drawn = plots.draw_all(group_arms(runs), table, out / "plots")
    profile = plots.normalization(table, out / "plots" / "normalization.png")
    lr_plot = plots.lr_sensitivity(table, out / "plots" / "lr_sensitivity.png")
    elr = plots.effective_lr(table["effective_lr"], plots.arm_styles(table["arms"]),
                             out / "plots" / "effective_lr.png")
    write_atomic(out / "report.json", json.dumps(table, indent=2) + "\n")
    write_atomic(out / "report.md", markdown(
        table, [p.relative_to(out).as_posix() for p in drawn],
        profile.relative_to(out).as_posix() if profile else None,
        lr_plot.relative_to(out).as_posix() if lr_plot else None,
        elr.relative_to(out).as_posix() if elr else None))
    return table
