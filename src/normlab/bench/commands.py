"""What `normlab bench`, `normlab train` and `normlab report` do (cli.py only parses)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from normlab.bench import distributed as D
from normlab.bench import train as training
from normlab.bench.config import RunConfig
from normlab.bench.init_from import architecture, check_init_from
from normlab.bench.metrics import read_json
from normlab.bench.presets import expand, load_preset, resolve
from normlab.bench.report import write_report
from normlab.bench.runtime import Runtime
from normlab.bench.sweep import run_sweep, summary_table


def fresh_dir(stem: str, root: Path = Path("runs")) -> Path:
    """A new, not yet existing directory runs/<stem>-<date>-<time>[-n]."""
    base = root / f"{Path(stem).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _setup(cfg: RunConfig, out: Path | None, stem: str) -> tuple[Runtime, Path]:
    """The process's runtime (joined once) and the output directory every rank agrees on."""
    rt = Runtime.start(cfg)
    chosen = str(out) if out is not None else (str(fresh_dir(stem)) if rt.dist.is_main else "")
    return rt, Path(D.broadcast_text(chosen, rt.dist))


def _require_preset(args: argparse.Namespace) -> str:
    if not args.preset:
        raise ValueError("give --preset NAME (e.g. smoke, quick, vit-quick) or a YAML file")
    return args.preset


def bench(args: argparse.Namespace) -> int:
    """Exit 0 when every arm ran to its end (diverged ones included: a divergence is a result),
    1 when an arm crashed."""
    preset = _require_preset(args)
    cfg, sweep = load_preset(preset, args.overrides)
    arms = expand(cfg, sweep)
    rt, out = _setup(cfg, args.out, preset)
    console = Console()
    if rt.dist.is_main:
        console.print(f"normlab bench: {len(arms)} arm(s) of preset {preset!r} -> {out}")
    try:
        table = run_sweep(arms, out, console=console, overwrite=args.overwrite,
                          timing_rounds=args.timing_rounds, runtime=rt,
                          show_progress=rt.dist.is_main and not args.no_progress)
    finally:
        D.teardown()
    if not rt.dist.is_main:
        return 0
    console.print(summary_table(table))
    console.print(f"report: {out / 'report.md'}")
    return 1 if any(row["failed"] for row in table["arms"]) else 0


def train(args: argparse.Namespace) -> int:
    """Exit 0 when the run completed, 1 when it diverged."""
    console = Console()
    if args.resume is not None:
        if args.preset or args.overrides or args.out or args.overwrite or args.init_from:
            raise ValueError("--resume takes its config from RUN_DIR/config.json; drop "
                             "--preset, --set, --init-from, --out and --overwrite")
        config_path = args.resume / "config.json"
        if not config_path.is_file():
            raise ValueError(f"{config_path} does not exist; is {args.resume} a run directory?")
        cfg = resolve(read_json(config_path))
        rt, out = _setup(cfg, args.resume, "")
    else:
        preset = _require_preset(args)
        source = architecture(str(args.init_from)) if args.init_from else []
        cfg, sweep = load_preset(preset, [*source, *args.overrides])
        pinned = {key: values[:1] for key, values in sweep.items()}
        if pinned:
            (_, cfg), = expand(cfg, pinned)
        check_init_from(cfg)
        rt, out = _setup(cfg, args.out, preset)
        if pinned and rt.dist.is_main:
            console.print("normlab train: one run; sweep axes pinned to their first value: "
                          + ", ".join(f"{k}={v[0]}" for k, v in pinned.items())
                          + " (use --set to choose, or `normlab bench` for all arms)")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    try:
        with Progress(*columns, console=console,
                      disable=not rt.dist.is_main or args.no_progress) as progress:
            task = progress.add_task("train", total=cfg.train.steps)

            def on_step(step: int, record: dict) -> None:
                progress.update(task, completed=step, description=f"loss {record['loss']:.3f}")

            summary = training.run(cfg, out, resume=args.resume is not None,
                                   overwrite=args.overwrite, on_step=on_step, runtime=rt)
    finally:
        D.teardown()
    if rt.dist.is_main:
        final = summary.get("final_val_loss")
        console.print(f"{summary['status']}: {summary['steps_done']} steps, final val loss "
                      f"{'—' if final is None else f'{final:.4f}'} -> {out}")
    return 0 if summary["status"] == "completed" else 1


def report(args: argparse.Namespace) -> int:
    if args.out is None and len(args.runs) != 1:
        raise ValueError("with several RUN_DIRs, say where to write with --out")
    out = args.out if args.out is not None else args.runs[0]
    table = write_report(args.runs, out)
    console = Console()
    console.print(summary_table(table))
    console.print(f"report: {out / 'report.md'}")
    return 0
