"""The `normlab` command line: a thin shell over the Python API.

    normlab zoo                 # every registered norm, with its facts
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

import normlab


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="normlab", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=normlab.__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    zoo = sub.add_parser("zoo", help="list every registered norm with its facts")
    zoo.add_argument("--width", type=int, default=None, help="terminal width for the table")
    zoo.set_defaults(func=_zoo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
