"""The `normlab convert` subcommand: surgery on a save_pretrained directory.

    normlab convert SRC_DIR --to rmsnorm|crmsnorm|fold|flashnorm --out DST_DIR [--overwrite]

Loads SRC_DIR as what it is (a surgery output through its manifest, else as its saved
architecture), runs to_rmsnorm, to_crmsnorm, fold_norms or fold_norms(flash=True), writes
DST_DIR with `save_converted`, reloads it with `load_converted` to check the round trip, and
prints the report. Refused with exit status 2 and the reason: a conversion that would not be
exact, a DST_DIR that is SRC_DIR or inside it, a non-empty DST_DIR without --overwrite.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from normlab.surgery.adapters import get_adapter
from normlab.surgery.convert import to_crmsnorm, to_rmsnorm
from normlab.surgery.fold import fold_norms
from normlab.surgery.io import (
    check_out,
    load_converted,
    load_source,
    read_manifest,
    save_converted,
)
from normlab.surgery.report import OutputProbe

OPERATIONS = {
    "rmsnorm": to_rmsnorm, "crmsnorm": to_crmsnorm, "fold": fold_norms,
    "flashnorm": functools.partial(fold_norms, flash=True),
}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `convert` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "convert",
        help="convert a save_pretrained model: Pre-LN → Pre-(C)RMSNorm, or fold its norms",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("src", metavar="SRC_DIR", help="a save_pretrained directory")
    parser.add_argument("--to", required=True, choices=sorted(OPERATIONS), help="the operation")
    parser.add_argument("--out", required=True, metavar="DST_DIR",
                        help="output directory: new or empty, never SRC_DIR or inside it")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the surgery files of a non-empty DST_DIR")
    parser.set_defaults(func=run_convert)
    return parser


def run_convert(args: argparse.Namespace) -> int:
    src, out = Path(args.src).resolve(), Path(args.out).resolve()
    if not src.is_dir():
        raise ValueError(f"{args.src}: no such directory (a save_pretrained folder)")
    if out == src or src in out.parents:
        raise ValueError(f"--out {args.out} is the source folder or inside it; write the "
                         f"converted model somewhere else")
    check_out(out, args.overwrite)
    base = read_manifest(src)
    model = load_source(src)
    try:
        model, report = OPERATIONS[args.to](model)
    except ValueError as err:
        print(f"normlab convert: refused: {err}", file=sys.stderr)
        return 2
    out = save_converted(model, out, report, base=base, overwrite=args.overwrite)
    print(report)
    probe = OutputProbe(model, get_adapter(model), None)
    diff = (probe.run(load_converted(out)) - probe.reference).abs().max().item()
    print(f"wrote {out}; reloaded with normlab.surgery.load_converted: max abs diff {diff:.3g}")
    return 0 if diff <= 1e-6 * probe.reference.abs().max().item() else 1
