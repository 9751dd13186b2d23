"""The `normlab` command line: a thin shell over the Python API.

    normlab zoo                                   # every registered norm, with its facts
    normlab bench --preset quick [--set k=v ...]  # train every arm of a sweep, then report
    normlab train --preset smoke [--set k=v ...]  # one run (or --resume RUN_DIR)
    normlab report RUN_DIR...                     # redraw tables and plots from the JSON
    normlab diagnose (--preset NAME | --gpt | --model DIR) --out DIR   # layer-by-layer metrics
    normlab convert SRC_DIR --to rmsnorm|crmsnorm|fold --out DST_DIR  # exact norm surgery
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

import normlab
from normlab import bench as bench_package
from normlab.bench import commands
from normlab.diagnostics import command as diagnose_command
from normlab.surgery import command as convert_command


def zoo_table() -> Table:
    """A table of every registered norm: name, family, statistics, fold, parameters, paper."""
    table = Table(title=f"normlab zoo: {len(normlab.list_norms())} normalizations")
    for column in ("name", "family", "stats", "fold", "running stats", "params @ d=512", "paper"):
        table.add_column(column, overflow="fold")
    for name in normlab.list_norms():
        norm = normlab.make_norm(name, 512)
        info = norm.info
        table.add_row(
            name, info.family, info.stats, info.fold, "yes" if info.has_running_stats else "",
            f"{sum(p.numel() for p in norm.parameters()):,}", info.paper,
        )
    return table


def _zoo(args: argparse.Namespace) -> int:
    Console(width=args.width).print(zoo_table())
    return 0


def _bench_options(parser: argparse.ArgumentParser) -> None:
    from normlab.bench.config import list_presets

    parser.add_argument("--preset", default=None,
                        help=f"a preset name ({', '.join(list_presets())}) or a YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config field, e.g. --set optim.lr=1e-3 (repeatable); "
                             "a [list] value makes the field a sweep axis")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: a fresh folder under runs/)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="normlab", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=normlab.__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    zoo = sub.add_parser("zoo", help="list every registered norm with its facts")
    zoo.add_argument("--width", type=int, default=None, help="terminal width for the table")
    zoo.set_defaults(func=_zoo)
    bench = sub.add_parser("bench", help="train every arm of a sweep preset, then report")
    _bench_options(bench)
    bench.set_defaults(func=commands.bench)
    train = sub.add_parser("train", help="train one run (the sweep axes pinned to their first "
                           "value), or continue one with --resume")
    _bench_options(train)
    train.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                       help="continue the run in RUN_DIR from its latest checkpoint")
    train.set_defaults(func=commands.train)
    report = sub.add_parser("report", help="redraw report.md and plots from run directories")
    report.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="run or sweep directories")
    report.add_argument("--out", type=Path, default=None,
                        help="where to write (default: the single RUN_DIR given)")
    report.set_defaults(func=commands.report)
    diagnose_command.add_parser(sub, bench=bench_package)
    convert_command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as error:  # a user mistake (config, preset, paths): say it, no traceback
        print(f"normlab {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
