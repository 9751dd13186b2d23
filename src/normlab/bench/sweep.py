"""Run every arm of a sweep in turn, then write the report.

Layout of a sweep directory:

    OUT/sweep.json           the arms (name -> resolved config)
    OUT/arms/<name>/         one run directory per arm (config.json, metrics.jsonl, ...)
    OUT/report.md, report.json, plots/

Running the same sweep into the same directory again skips finished arms and resumes
interrupted ones from their latest checkpoint, so a killed sweep loses at most
`train.checkpoint_every` steps of one arm. A diverged arm is recorded and the sweep goes on;
an arm that raises is recorded as failed (with the error) and the sweep goes on too.
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

from normlab.bench import train
from normlab.bench.config import RunConfig
from normlab.bench.metrics import write_atomic
from normlab.bench.report import write_report


def run_sweep(arms: list[tuple[str, RunConfig]], out: Path, *, console: Console | None = None,
              show_progress: bool = True, is_main: bool = True) -> dict[str, Any] | None:
    """Train each (name, config) into OUT/arms/<name>; return the report table.

    Under torchrun every rank calls this; only the main rank (`is_main`) writes files, and
    the others return None.
    """
    out = Path(out)
    console = console or Console()
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "sweep.json", json.dumps(
            {"arms": {name: cfg.to_dict() for name, cfg in arms}}, indent=2) + "\n")
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
                summary = train.run(cfg, run_dir, resume=True, on_step=on_step)
            except Exception as error:  # the sweep goes on; the report shows the failure
                if not is_main:
                    raise
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir / "config.json").write_text(cfg.to_json() + "\n")
                summary = {"status": "failed", "error": f"{type(error).__name__}: {error}",
                           "traceback": traceback.format_exc()}
                write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
                console.print(f"[red]arm {name} failed: {summary['error']}[/red]")
            done_before += cfg.train.steps
            progress.update(overall, completed=done_before)
            progress.update(task, completed=cfg.train.steps,
                            description=f"{label}: {summary['status']}")
    return write_report([out], out) if is_main else None


def summary_table(table: dict[str, Any]) -> Table:
    """The report's ranking as a rich table (best arm first)."""
    view = Table(title="normlab bench: final validation loss, best first")
    for column in ("#", "arm", "val loss", "± std", "tokens/s ×", "mem ×", "status"):
        view.add_column(column)
    for i, row in enumerate(table["arms"], 1):
        def fmt(value, spec=".4f"):
            return "—" if value is None else format(value, spec)
        status = "ok"
        if row["diverged"]:
            status = "diverged @ " + ", ".join(str(d["step"]) for d in row["diverged"])
        elif row["failed"]:
            status = row["failed"][0]["status"]
        view.add_row(str(i), escape(row["arm"]), fmt(row["val_loss_mean"]),
                     fmt(row["val_loss_std"]), fmt(row["tokens_per_s_rel"], ".2f"),
                     fmt(row["mem_rel"], ".2f"), status)
    return view
