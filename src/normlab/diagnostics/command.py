"""`normlab diagnose`: record a model, write diagnostics.json and its plots.

    normlab diagnose --preset quick --set placement.name=lns --out runs/diag-lns
    normlab diagnose --gpt --set depth=8 --set placement=post --out runs/diag-post
    normlab diagnose --model path/to/hf_folder --out runs/diag-hf
    normlab diagnose --replot runs/diag-lns/diagnostics.json runs/diag-post/diagnostics.json \
        --out runs/diag-compare

`--preset` needs `normlab.bench` (presets, model builder, corpus). The diagnostics package sits
below the bench and never imports it: cli.py hands the bench package in through
`add_parser(subparsers, bench=normlab.bench)`, and the command uses its `load_preset`,
`expand`, `train.build_model` and `data.load_data`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from normlab.diagnostics import plots, schema
from normlab.diagnostics.run import diagnose
from normlab.diagnostics.sources import (
    build_gpt,
    hf_batches,
    load_hf,
    parse_settings,
    token_batches,
)


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (argparse then names the option in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_parser(subparsers: Any, *, bench: ModuleType | None = None) -> argparse.ArgumentParser:
    """Add the `diagnose` subcommand to `subparsers` (from `ArgumentParser.add_subparsers`)."""
    parser = subparsers.add_parser(
        "diagnose", help="record what normalization does in a model, block by block",
        description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="a bench preset (its first sweep arm) or YAML file")
    source.add_argument("--model", type=Path, metavar="DIR",
                        help="a HuggingFace save_pretrained folder (loaded offline)")
    source.add_argument("--gpt", action="store_true",
                        help="a normlab GPT from GPTConfig fields (--set, --config)")
    source.add_argument("--replot", type=Path, nargs="+", metavar="JSON",
                        help="only redraw plots from diagnostics.json files (overlaid)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="preset field (placement.name=lns) or GPT field (placement=lns)")
    parser.add_argument("--config", type=Path, default=None,
                        help="with --gpt: a JSON object of GPTConfig fields")
    parser.add_argument("--data", choices=("auto", "random", "corpus"), default="auto",
                        help="auto: the preset's corpus with --preset, random tokens otherwise")
    parser.add_argument("--batches", type=positive_int, default=2,
                        help="recorded steps (default 2)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="default: the preset's, else 4")
    parser.add_argument("--seq-len", type=positive_int, default=None,
                        help="default: the preset's, else 64")
    parser.add_argument("--seed", type=int, default=0, help="model init and data seed")
    parser.add_argument("--train-mode", action="store_true",
                        help="record in train mode (batch statistics, dropout); default eval")
    parser.add_argument("--no-backward", action="store_true", help="skip gradient metrics")
    parser.add_argument("--no-skip", action="store_true", help="skip the skip-a-block losses")
    parser.add_argument("--no-plots", action="store_true", help="write diagnostics.json only")
    parser.add_argument("--max-tokens", type=positive_int, default=2048,
                        help="token rows kept per activation per step")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.set_defaults(func=lambda args: run_command(args, bench=bench))
    return parser


def _preset_source(args: argparse.Namespace, bench: ModuleType | None):
    if bench is None:
        raise SystemExit("normlab diagnose: --preset needs the bench; use --gpt with --set "
                         "fields, or --model DIR")
    overrides = list(args.overrides)
    overrides += [f"data.{k}={v}" for k, v in (("batch_size", args.batch_size),
                                               ("seq_len", args.seq_len)) if v is not None]
    cfg, sweep = bench.load_preset(args.preset, overrides)
    _, cfg = bench.expand(cfg, {key: values[:1] for key, values in sweep.items()})[0]
    torch.manual_seed(args.seed)
    model = bench.train.build_model(cfg)
    if args.data == "random":
        if cfg.model.kind != "gpt":
            raise SystemExit("normlab diagnose: --data random is for text models; the "
                             f"{cfg.model.kind} preset uses its own data")
        batches = token_batches(256, count=args.batches, batch_size=cfg.data.batch_size,
                                seq_len=cfg.data.seq_len, seed=args.seed)
    else:
        data = bench.data.load_data(cfg.data)
        generator = torch.Generator().manual_seed(args.seed)
        batches = [data.train_batch(generator) for _ in range(args.batches)]
    data_name = "random" if args.data == "random" else cfg.data.source
    return model, batches, {"source": f"preset:{args.preset}", "config": cfg.to_dict(),
                            "data": data_name}


def _gpt_source(args: argparse.Namespace):
    settings = parse_settings(args.overrides, args.config)
    settings.setdefault("block_size", args.seq_len or 64)
    model = build_gpt(settings, seed=args.seed)
    if args.data == "corpus":
        raise SystemExit("normlab diagnose: --data corpus needs --preset (the bench corpus)")
    batches = token_batches(model.config.vocab_size, count=args.batches,
                            batch_size=args.batch_size or 4,
                            seq_len=args.seq_len or model.config.block_size, seed=args.seed)
    return model, batches, {"source": "gpt", "config": settings, "data": "random"}


def _hf_source(args: argparse.Namespace):
    if args.overrides or args.config or args.data == "corpus":
        raise SystemExit("normlab diagnose: --model takes neither --set, --config nor "
                         "--data corpus")
    if not args.model.is_dir():
        raise ValueError(f"--model {args.model}: no such directory (a save_pretrained folder)")
    model, causal = load_hf(args.model)
    batches = hf_batches(model, causal=causal, count=args.batches,
                         batch_size=args.batch_size or 4, seq_len=args.seq_len or 64,
                         seed=args.seed)
    return model, batches, {"source": f"hf:{args.model}", "causal_lm": causal, "data": "random"}


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return type(batch)(_to(v, device) for v in batch)


def _replot(paths: list[Path], out: Path) -> int:
    runs: dict[str, dict] = {}
    for i, path in enumerate(paths):
        doc = schema.read(path)
        label = doc["meta"].get("label") or path.parent.name or f"run{i}"
        runs[label if label not in runs else f"{label}-{i}"] = doc
    for written in plots.plot_all(runs, out):
        print(written)
    return 0


def run_command(args: argparse.Namespace, *, bench: ModuleType | None = None) -> int:
    """What `normlab diagnose` does with parsed arguments; returns the exit status."""
    if args.replot:
        return _replot(args.replot, args.out)
    if args.batches < 1:
        raise SystemExit("normlab diagnose: --batches must be at least 1")
    try:
        if args.preset:
            model, batches, meta = _preset_source(args, bench)
        elif args.model:
            model, batches, meta = _hf_source(args)
        else:
            model, batches, meta = _gpt_source(args)
    except ValueError as error:
        raise SystemExit(f"normlab diagnose: {error}") from None
    device = torch.device(args.device)
    model: nn.Module = model.to(device).train(args.train_mode)
    batches = [_to(b, device) for b in batches]
    meta.update(seed=args.seed, label=args.out.name)
    report = diagnose(model, batches, backward=not args.no_backward, skip=not args.no_skip,
                      max_tokens=args.max_tokens, meta=json.loads(json.dumps(meta, default=str)))
    print(schema.write(report, args.out / "diagnostics.json"))
    for written in [] if args.no_plots else plots.plot_all(report, args.out):
        print(written)
    return 0
