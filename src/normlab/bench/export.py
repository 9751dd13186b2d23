"""`normlab export RUN_DIR --out DIR`: a trained run as a native `transformers` folder.

The run's model is rebuilt from RUN_DIR/config.json, given the weights of its latest complete
checkpoint (hashes, config and shapes verified by `checkpoint.load`) and written by
`normlab.hf.export`: a `save_pretrained` folder (safetensors) that
`AutoModelForCausalLM.from_pretrained(DIR)` loads with the same logits. A model without a
native equivalent is refused with the reason, before anything is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from normlab.bench.init_from import run_model


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `export` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "export", help="write a trained run's latest checkpoint as a transformers folder",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("run", type=Path, metavar="RUN_DIR", help="a `normlab train` run")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="the save_pretrained folder to write")
    parser.set_defaults(func=run_export)
    return parser


def run_export(args: argparse.Namespace) -> int:
    from normlab.hf import export  # transformers: the `hf` extra

    model, step = run_model(args.run)
    out = export(model, args.out)
    print(f"exported step {step} of {args.run} ({type(model).__name__}) -> {out}")
    return 0
