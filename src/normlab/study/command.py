"""`normlab study`: settle the literature's claims with the sequential stopping rule.

    normlab study claim-3                      # run claim-3's claims seed by seed, until decided
    normlab study --all                        # every preset with a claims: section
    normlab study claim-3 --no-train           # summarize the runs already on disk
    normlab study --table                      # rewrite docs/reproduction.md's table

Runs go to ROOT/<preset>/arms/ and summaries to ROOT/<preset>/study.json (ROOT is
docs/reproduction unless --root says otherwise); the same command continues a stopped study.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from normlab.diagnostics.command import int_at_least
from normlab.study.claims import claim_presets, folder_name
from normlab.study.runner import SUMMARY, run_study
from normlab.study.sequential import DEFAULT_ALPHA
from normlab.study.table import load_summaries, render, update_doc

DEFAULT_ROOT = Path("docs/reproduction")
DEFAULT_DOC = Path("docs/reproduction.md")


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {value}")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `study` subcommand to `subparsers` (from `ArgumentParser.add_subparsers`)."""
    parser = subparsers.add_parser(
        "study", help="run claim presets seed by seed until the paired difference is decided",
        description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="*", metavar="PRESET",
                        help="claim presets to study (e.g. claim-3)")
    parser.add_argument("--all", action="store_true", help="every preset with claims")
    parser.add_argument("--table", action="store_true",
                        help="rewrite the table of --doc from ROOT/*/study.json (after any run)")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                        help=f"where runs and summaries go (default {DEFAULT_ROOT})")
    parser.add_argument("--doc", type=Path, default=DEFAULT_DOC,
                        help=f"the page whose table --table rewrites (default {DEFAULT_DOC})")
    parser.add_argument("--budget", type=int_at_least(2), default=None, metavar="N",
                        help="the seed budget of every claim (default: each claim's, 8)")
    parser.add_argument("--alpha", type=_alpha, default=DEFAULT_ALPHA,
                        help=f"the error rate over all looks (default {DEFAULT_ALPHA})")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config field of every run")
    parser.add_argument("--no-train", action="store_true",
                        help="train nothing: summarize the finished runs under ROOT")
    parser.set_defaults(func=study)
    return parser


def verdict_table(summary: dict[str, Any]) -> Table:
    view = Table(title=f"normlab study {summary['preset']}", caption=summary["procedure"])
    for column in ("claim", "Δ = arm − baseline", "claimed", "Δ mean", "interval", "seeds",
                   "verdict"):
        view.add_column(column)
    for c in summary["claims"]:
        claimed = f"|Δ| < {c['margin']:g}" if c["expect"] == "matches" else \
            ("Δ < 0" if c["expect"] == "lower" else "Δ > 0")
        interval = "—" if c["interval"] is None else \
            f"[{c['interval'][0]:+.4f}, {c['interval'][1]:+.4f}]"
        mean = "—" if c["delta_mean"] is None else f"{c['delta_mean']:+.4f}"
        seeds = f"{c['pairs']} pairs / {c['seeds_run']} seeds (budget {c['budget']})"
        view.add_row(c["id"], escape(f"{c['arm']['label']} − {c['baseline']['label']}"),
                     claimed, mean, interval, seeds, c["verdict"])
    return view


def study(args: argparse.Namespace) -> int:
    """Exit 0 (a verdict of any kind is a result)."""
    if args.all and args.presets:
        raise ValueError("give PRESET names or --all, not both")
    presets = claim_presets() if args.all else args.presets
    if not presets and not args.table:
        raise ValueError("give claim presets (e.g. claim-3), --all, or --table")
    console = Console()
    for preset in presets:
        summary = run_study(preset, args.root, overrides=args.overrides, budget=args.budget,
                            alpha=args.alpha, train=not args.no_train,
                            announce=lambda text: console.print(escape(text)))
        console.print(verdict_table(summary))
        console.print(f"summary: {args.root / folder_name(preset) / SUMMARY}")
    if args.table:
        changed = update_doc(args.doc, render(load_summaries(args.root)))
        console.print(f"{args.doc}: table {'rewritten' if changed else 'already up to date'}")
    return 0
