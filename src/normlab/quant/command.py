"""`normlab quantize`: the fake-quantization error of a model, optionally after migration.

    normlab quantize --run runs/quick/pre-layernorm --spec W8A8 --weights tensor
    normlab quantize --run RUN_DIR --spec W4A8 --migrate smoothquant --alpha 0.5 --out q.json
    normlab quantize --model path/to/hf_folder --spec W8A8 --migrate repq

A bench run (`--run`; the bench sits above this package, so cli.py hands it in, as for
`normlab diagnose`, and its `export.run_model`, `presets` and `data` are used) is
measured on its preset's fixed validation batches, with its loss as the score, and calibrated
on training batches; a HuggingFace folder (`--model`) on random token batches. The heads
(`lm_head`, `head`, `pooler`, `classifier`) stay in floating point. Prints the migration report
(if any) and the quantization report; `--out` also writes both as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from normlab.diagnostics.command import int_at_least
from normlab.diagnostics.sources import hf_batches
from normlab.quant.error import quant_error
from normlab.quant.fake import GRANULARITIES, QuantSpec
from normlab.surgery.io import load_hf
from normlab.surgery.migrate import METHODS, migrate_scales

HEADS = ("lm_head", "head", "pooler", "classifier")


def in_blocks(name: str, module: nn.Module) -> bool:
    """Every Linear but the heads."""
    return not name.startswith(HEADS)


def add_parser(subparsers: Any, *, bench: ModuleType | None = None) -> argparse.ArgumentParser:
    """Add the `quantize` subcommand to `subparsers`."""
    parser = subparsers.add_parser(
        "quantize", help="fake-quantize a model's Linears and measure the error",
        description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, metavar="RUN_DIR", help="a trained bench run")
    source.add_argument("--model", type=Path, metavar="DIR",
                        help="a HuggingFace save_pretrained folder (loaded offline)")
    parser.add_argument("--spec", default="W8A8", help="W8A8, W4A8, W8, A8, ... (default W8A8)")
    parser.add_argument("--weights", choices=("tensor", "channel"), default="channel",
                        help="weight scale per tensor or per output channel (default channel)")
    parser.add_argument("--acts", choices=GRANULARITIES, default="tensor",
                        help="activation scale per tensor, per input channel or per token")
    parser.add_argument("--migrate", choices=("none", *METHODS), default="none",
                        help="migrate scales through the norms first (default none)")
    parser.add_argument("--alpha", type=float, default=0.5, help="SmoothQuant's α")
    parser.add_argument("--batches", type=int_at_least(1), default=4,
                        help="evaluation batches (and calibration batches)")
    parser.add_argument("--seq-len", type=int_at_least(1), default=64,
                        help="with --model: tokens per random batch (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument("--out", type=Path, default=None, help="also write the reports (JSON)")
    parser.set_defaults(func=lambda args: run_command(args, bench=bench))
    return parser


def _run_source(args: argparse.Namespace, bench: ModuleType | None):
    if bench is None:
        raise SystemExit("normlab quantize: --run needs the bench; use --model DIR")
    model, _ = bench.export.run_model(args.run)
    cfg = bench.presets.resolve(json.loads((args.run / "config.json").read_text()))
    data = bench.data.load_data(cfg.data)
    generator = torch.Generator().manual_seed(args.seed)
    calibration = [data.train_batch(generator) for _ in range(args.batches)]
    return model, list(data.val_batches(args.batches)), calibration, lambda m, b: m(*b)[1].item()


def _hf_source(args: argparse.Namespace):
    if not args.model.is_dir():
        raise ValueError(f"--model {args.model}: no such directory (a save_pretrained folder)")
    model, causal = load_hf(args.model)
    batches = hf_batches(model, causal=causal, count=2 * args.batches, batch_size=4,
                         seq_len=args.seq_len, seed=args.seed)
    score = (lambda m, b: m(**b).loss.item()) if causal else None
    return model.eval(), batches[: args.batches], batches[args.batches:], score


def run_command(args: argparse.Namespace, *, bench: ModuleType | None = None) -> int:
    """What `normlab quantize` does with parsed arguments; returns the exit status."""
    spec = QuantSpec.parse(args.spec, w_granularity=args.weights, a_granularity=args.acts)
    if args.out is not None and args.out.exists():
        raise ValueError(f"--out {args.out} exists; choose a new file (nothing is overwritten)")
    if args.run is not None:
        model, batches, calibration, score = _run_source(args, bench)
    else:
        model, batches, calibration, score = _hf_source(args)
    out: dict[str, Any] = {"spec": spec.label, "migration": None}
    if args.migrate != "none":
        probe = batches[0] if isinstance(batches[0], dict) else batches[0][0]
        model, migration = migrate_scales(model, calibration, method=args.migrate,
                                          alpha=args.alpha, probe=probe)
        print(migration)
        out["migration"] = migration.to_dict()
    report = quant_error(model, spec, batches, where=in_blocks, score=score)
    print(report)
    out["quantization"] = report.to_dict()
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1, default=str) + "\n")
        print(args.out)
    return 0
