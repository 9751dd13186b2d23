"""The `normlab convert` subcommand: surgery on a save_pretrained directory.

    normlab convert SRC_DIR --to rmsnorm|crmsnorm|fold --out DST_DIR

Loads SRC_DIR (config.json + safetensors) as its saved architecture, runs to_rmsnorm,
to_crmsnorm or fold_norms, writes DST_DIR with `save_converted`, reloads it with
`load_converted` to check the round trip, and prints the report. Exit status 2 when the
conversion is refused (the reason is printed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from normlab.surgery.adapters import get_adapter
from normlab.surgery.convert import to_crmsnorm, to_rmsnorm
from normlab.surgery.fold import fold_norms
from normlab.surgery.io import load_converted, load_source, save_converted
from normlab.surgery.report import OutputProbe

OPERATIONS = {"rmsnorm": to_rmsnorm, "crmsnorm": to_crmsnorm, "fold": fold_norms}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `convert` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "convert",
        help="convert a save_pretrained model: Pre-LN → Pre-(C)RMSNorm, or fold its norms",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("src", metavar="SRC_DIR", help="a save_pretrained directory")
    parser.add_argument("--to", required=True, choices=sorted(OPERATIONS), help="the operation")
    parser.add_argument("--out", required=True, metavar="DST_DIR", help="output directory")
    parser.set_defaults(func=run_convert)
    return parser


def run_convert(args: argparse.Namespace) -> int:
    if not Path(args.src).is_dir():
        raise ValueError(f"{args.src}: no such directory (a save_pretrained folder)")
    model = load_source(args.src)
    try:
        model, report = OPERATIONS[args.to](model)
    except ValueError as err:
        print(f"normlab convert: refused: {err}", file=sys.stderr)
        return 2
    out = save_converted(model, args.out, report)
    print(report)
    probe = OutputProbe(model, get_adapter(model), None)
    diff = (probe.run(load_converted(out)) - probe.reference).abs().max().item()
    print(f"wrote {out}; reloaded with normlab.surgery.load_converted: max abs diff {diff:.3g}")
    return 0 if diff <= 1e-6 * probe.reference.abs().max().item() else 1
