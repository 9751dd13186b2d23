"""Run every arm of a sweep in turn, time them apart from training, then write the report.

Layout of a sweep directory:

    OUT/sweep.json           the arms (name -> resolved config and its SHA-256)
    OUT/arms/<name>/         one run directory per arm (config.json, metrics.jsonl, ...)
    OUT/timing.json          each arm's speed and memory (bench/timing.py)
    OUT/report.md, report.json, plots/

Running the same sweep into the same directory again skips finished arms and resumes
interrupted ones from their latest checkpoint, so a killed sweep loses at most
`train.checkpoint_every` steps of one arm; a directory that holds other arms or arms of another
config is refused before anything runs (bench/rundir.py). A diverged arm is recorded and the
sweep goes on; an arm that raises is recorded as failed (with the error) and the sweep goes on
too.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from normlab.bench import distributed as D
from normlab.bench import timing, train
from normlab.bench.config import RunConfig
from normlab.bench.metrics import write_atomic
from normlab.bench.report import write_report
from normlab.bench.rundir import claim_sweep_dir, record_run, record_sweep
from normlab.bench.runtime import Runtime


def run_sweep(arms: list[tuple[str, RunConfig]], out: Path, *, console: Console | None = None,
              show_progress: bool = True, overwrite: bool = False, timing_rounds: int = 3,
              runtime: Runtime | None = None) -> dict[str, Any] | None:
    """Train each (name, config) into OUT/arms/<name>, time each arm against the baseline
    (`timing_rounds` back-to-back pairs; 0 skips it) and return the report table.

    Under torchrun every rank calls this; only the main rank writes files, and the others
    return None (the timing pass, a single-process measurement, is skipped under torchrun).
    """
    out = Path(out)
    console = console or Console()
    rt = runtime or Runtime.start(arms[0][1])
    is_main = rt.dist.is_main
    if is_main or not overwrite:  # every rank checks, so all refuse together
        claim_sweep_dir(out, arms, overwrite=overwrite)
    D.barrier(rt.dist)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        record_sweep(out, arms)
    total = sum(cfg.train.steps for _, cfg in arms)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not show_progress) as progress:
        overall = progress.add_task("all arms", total=total)
        done_before = 0
        for i, (name, cfg) in enumerate(arms, 1):
            label = f"({i}/{len(arms)}) {name}"
            task = progress.add_task(label, total=cfg.train.steps)

            def on_step(step: int, record: dict[str, Any], task=task, base=done_before,
                        label=label) -> None:
                progress.update(task, completed=step,
                                description=f"{label} loss {record['loss']:.3f}")
                progress.update(overall, completed=base + step)

            run_dir = out / "arms" / name
            try:
                summary = train.run(cfg, run_dir, resume=True, on_step=on_step, runtime=rt)
            except train.RunInterrupted:
                raise train.RunInterrupted(
                    f"interrupted in arm {name} (its last step saved); run the same "
                    f"`normlab bench` command with --out {out} to continue") from None
            except Exception as error:  # the sweep goes on; the report shows the failure
                if not is_main:
                    raise
                run_dir.mkdir(parents=True, exist_ok=True)
                record_run(run_dir, cfg)
                summary = {"status": "failed", "error": f"{type(error).__name__}: {error}",
                           "traceback": traceback.format_exc()}
                write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
                console.print(f"[red]arm {name} failed: {summary['error']}[/red]")
            done_before += cfg.train.steps
            progress.update(overall, completed=done_before)
            progress.update(task, completed=cfg.train.steps,
                            description=f"{label}: {summary['status']}")
    if not is_main:
        return None
    if timing_rounds and not rt.dist.enabled:
        console.print(f"timing {len(arms)} arm(s) against the baseline, {timing_rounds} "
                      "back-to-back pairs each")
        timing.measure(arms, out, rt, rounds=timing_rounds)
    return write_report([out], out)


def summary_table(table: dict[str, Any]) -> Table:
    """The report's ranking (by mean) as a rich table, with the verdict as its caption."""
    view = Table(title="normlab bench: final validation loss, ranked by mean")
    for column in ("#", "arm", "val loss", "95 % CI ±", "tokens/s ×", "mem ×", "status"):
        view.add_column(column)
    for i, row in enumerate(table["arms"], 1):
        def fmt(value, spec=".4f"):
            return "—" if value is None else format(value, spec)
        status = "ok"
        if row["diverged"]:
            status = "diverged @ " + ", ".join(str(d["step"]) for d in row["diverged"])
        elif row["failed"]:
            status = row["failed"][0]["status"]
        speed = fmt(row["speed_ratio"], ".2f")
        if row["speed_within_noise"]:
            speed += " (noise)"
        view.add_row(str(i), escape(row["arm"]), fmt(row["val_loss_mean"]),
                     fmt(row["val_loss_ci95"]), speed, fmt(row["mem_ratio"], ".2f"), status)
    view.caption = table["verdict"]["reason"]
    if table["verdict"]["best"]:
        view.caption = f"best arm {table['verdict']['best']}: {view.caption}"
    else:
        view.caption = f"no arm is better than the noise: {view.caption}"
    return view
