"""The `normlab` command line: a thin shell over the Python API.

    normlab zoo                                   # every registered norm, with its facts
    normlab bench --preset quick [--set k=v ...]  # train every arm of a sweep, then report
    normlab train --preset smoke [--set k=v ...]  # one run (--resume RUN_DIR, --init-from HF_DIR)
    normlab report RUN_DIR...                     # redraw tables and plots from the JSON
    normlab diagnose (--preset NAME | --gpt | --model DIR) --out DIR   # layer-by-layer metrics
    normlab convert SRC_DIR --to rmsnorm|crmsnorm|fold|flashnorm --out DST_DIR  # exact surgery
    normlab export RUN_DIR --out DIR              # a trained run as a transformers folder
    normlab study CLAIM_PRESET... | --all | --table  # settle claims seed by seed
    normlab adapt eval|testtime RUN_DIR ...       # a run on other data; test-time norms
    normlab quantize (--run RUN_DIR | --model DIR) --spec W4A8 [--migrate smoothquant]
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

import normlab
from normlab import bench as bench_package
from normlab.bench import adapt as adapt_command
from normlab.bench import commands
from normlab.bench import export as export_command
from normlab.bench.train import RunInterrupted
from normlab.diagnostics import command as diagnose_command
from normlab.diagnostics.command import int_at_least
from normlab.quant import command as quantize_command
from normlab.study import command as study_command
from normlab.surgery import command as convert_command


def zoo_table() -> Table:
    """A table of every registered norm: name, family, statistics, fold, parameters, paper."""
    table = Table(title=f"normlab zoo: {len(normlab.list_norms())} normalizations")
    for column in ("name", "family", "stats", "fold", "running stats", "params @ d=512", "paper"):
        table.add_column(column, overflow="fold")
    for name in normlab.list_norms():
        norm = normlab.make_norm(name, 512, **normlab.get_norm_class(name).example_kwargs(512))
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
    from normlab.bench.presets import list_presets

    parser.add_argument("--preset", default=None,
                        help=f"a preset name ({', '.join(list_presets())}) or a YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config field, e.g. --set optim.lr=1e-3 (repeatable); "
                             "a [list] value makes the field a sweep axis")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: a fresh folder under runs/)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in an --out that holds a normlab run or sweep "
                             "(its old results are deleted)")
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
    bench.add_argument("--timing-rounds", type=int_at_least(0), default=3, metavar="N",
                       help="rounds of the timing pass that measures each arm's speed and "
                            "memory apart from training (default 3; 0 skips it)")
    bench.set_defaults(func=commands.bench)
    train = sub.add_parser("train", help="train one run (the sweep axes pinned to their first "
                           "value), or continue one with --resume")
    _bench_options(train)
    train.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                       help="continue the run in RUN_DIR from its latest checkpoint")
    train.add_argument("--init-from", type=Path, default=None, metavar="HF_DIR",
                       help="start from the weights and architecture of a transformers folder "
                            "(Llama, Qwen3, OLMo-2 or GPT-2 with a byte vocabulary, e.g. one "
                            "`normlab export` wrote); the preset gives data and schedule")
    train.set_defaults(func=commands.train)
    report = sub.add_parser("report", help="redraw report.md and plots from run directories")
    report.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="run or sweep directories")
    report.add_argument("--out", type=Path, default=None,
                        help="where to write (default: the single RUN_DIR given)")
    report.set_defaults(func=commands.report)
    diagnose_command.add_parser(sub, bench=bench_package)
    convert_command.add_parser(sub)
    export_command.add_parser(sub)
    study_command.add_parser(sub)
    adapt_command.add_parser(sub)
    quantize_command.add_parser(sub, bench=bench_package)
    return parser


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def describe(error: BaseException) -> tuple[int, str]:
    """(exit status, one-line message) for an error that ended a command.

    2: bad input (config, preset, paths, unreadable or unwritable files); 1: a run that could
    not go on (a full disk, an unexpected error); 130: interrupted (Ctrl-C).
    """
    if isinstance(error, RunInterrupted):
        return 130, str(error)
    if isinstance(error, KeyboardInterrupt):
        return 130, "interrupted"
    if isinstance(error, OSError):
        where = f": {error.filename}" if error.filename else ""
        reason = error.strerror or str(error)
        if error.errno in DISK_FULL:
            return 1, (f"error: {reason}{where}; partial files were removed, and a run continues "
                       "from its last complete checkpoint with `normlab train --resume RUN_DIR` "
                       "(or the same `normlab bench` command)")
        return 2, f"error: {reason}{where}"
    if isinstance(error, ValueError):
        return 2, f"error: {error}"
    return 1, (f"internal error: {type(error).__name__}: {error} "
               "(NORMLAB_DEBUG=1 shows the traceback)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; every failure ends in one line on stderr (from rank 0 only under
    torchrun) and a documented exit status. NORMLAB_DEBUG=1 re-raises instead. SIGTERM stops a
    run as Ctrl-C does."""
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.func(args)
    except (Exception, KeyboardInterrupt) as error:
        if os.environ.get("NORMLAB_DEBUG") == "1":
            raise
        status, message = describe(error)
        if os.environ.get("RANK", "0") == "0":
            print(f"normlab {args.command}: {message}", file=sys.stderr)
        return status
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame) -> None:
    """SIGTERM (a scheduler's or `timeout`'s stop) is handled as Ctrl-C: save, then exit 130."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
