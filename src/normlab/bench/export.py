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

from torch import nn

from normlab.bench import checkpoint
from normlab.bench.metrics import read_json
from normlab.bench.model import build_model
from normlab.bench.presets import resolve


def run_model(run_dir: Path) -> tuple[nn.Module, int]:
    """The model of a run with the weights of its latest checkpoint, in eval mode, and the
    checkpoint's step."""
    config_path = Path(run_dir) / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{config_path} does not exist; is {run_dir} a run directory?")
    cfg = resolve(read_json(config_path))
    model = build_model(cfg)
    path = checkpoint.latest(run_dir)
    if path is None:
        raise ValueError(f"{run_dir} has no complete checkpoint to export")
    ckpt = checkpoint.load(path, config=cfg.to_dict(), expected=model.state_dict())
    model.load_state_dict(ckpt.model)
    return model.eval(), ckpt.step


def load_weights(model: nn.Module, run_dir: Path) -> int:
    """Give `model` the weights of the latest checkpoint of the run in `run_dir` (a
    `train.init_from`); returns its step. ValueError when the run's model differs."""
    source, step = run_model(run_dir)
    try:
        model.load_state_dict(source.state_dict())
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise ValueError(f"train.init_from {str(run_dir)!r}: its model differs from this "
                         f"config's ({first})") from None
    return step


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
