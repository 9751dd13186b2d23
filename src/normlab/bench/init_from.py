"""Where a run's starting weights come from: `model.init_from`, a run or a transformers folder.

    architecture("runs/pre")       # the bench fields of the source's model (train --init-from)
    check_init_from(cfg)           # ValueError naming a field the source contradicts
    load_initial_weights(model, cfg)
    model, step = run_model("runs/pre")   # a run's model at its latest checkpoint

A source is a normlab run directory (its latest checkpoint; the config.json gives the
architecture) or a `save_pretrained` folder of a family `normlab.hf` reads (Llama, Qwen3,
OLMo-2, GPT-2; `normlab.hf.config_from_hf` gives the architecture, no weight read). Its model
must be the config's: the same fields, a window no longer than a rotary model's positions and
equal to a GPT's learned ones, and the data's vocabulary.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from normlab.bench import checkpoint
from normlab.bench.config import RunConfig
from normlab.bench.metrics import read_json
from normlab.bench.model import KINDS, bench_name, build_model, model_config
from normlab.bench.presets import resolve
from normlab.bench.rundir import RUN_MARKER


def _hf():
    try:
        import normlab.hf as hf
    except ImportError:
        raise ValueError("a transformers folder as model.init_from needs transformers: "
                         "pip install 'normlab[hf]'") from None
    return hf


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / RUN_MARKER).is_file()


def _run_config(run_dir: str | Path) -> RunConfig:
    config_path = Path(run_dir) / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{config_path} does not exist; is {run_dir} a run directory?")
    return resolve(read_json(config_path))


def run_model(run_dir: str | Path) -> tuple[nn.Module, int]:
    """The model of a run with the weights of its latest checkpoint, in eval mode, and the
    checkpoint's step (hashes, config and shapes verified by `checkpoint.load`)."""
    cfg = _run_config(run_dir)
    model = build_model(cfg)
    path = checkpoint.latest(run_dir)
    if path is None:
        raise ValueError(f"{run_dir} has no complete checkpoint")
    ckpt = checkpoint.load(path, config=cfg.to_dict(), expected=model.state_dict())
    model.load_state_dict(ckpt.model)
    return model.eval(), ckpt.step


def source_config(source: str | Path):
    """The model config (GPTConfig, LlamaConfig, ...) of a run directory or transformers folder."""
    if is_run_dir(source):
        return model_config(_run_config(source))
    return _hf().config_from_hf(source)


def architecture(source: str | Path) -> list[tuple[str, Any]]:
    """The bench fields that give a run the model of `source`, as (field, value) overrides.

    A run directory: its model, norm and placement sections and the data fields the model
    depends on (tokenizer, BPE size, window). A transformers folder: every field of its model
    config under its bench name, `data.seq_len` for a GPT (learned positions), and
    `data.tokenizer` when the folder holds a tokenizer.json and a vocabulary other than bytes.
    Both set `model.init_from` to `source`.
    """
    if is_run_dir(source):
        saved = _run_config(source)
        fields = [(f"{section}.{f.name}", getattr(getattr(saved, section), f.name))
                  for section in ("model", "norm", "placement")
                  for f in dataclasses.fields(getattr(saved, section))]
        fields += [(f"data.{key}", getattr(saved.data, key))
                   for key in ("tokenizer", "vocab_size", "seq_len")]
        return [*fields, ("model.init_from", str(source))]
    config = _hf().config_from_hf(source)
    kind = next(k for k, (config_class, _) in KINDS.items() if type(config) is config_class)
    fields = [("model.kind", kind), ("model.init_from", str(source))]
    if config.vocab_size != 256 and (Path(source) / "tokenizer.json").is_file():
        fields.append(("data.tokenizer", str(source)))
    for f in dataclasses.fields(config):
        if f.name == "block_size":
            if kind == "gpt":
                fields.append(("data.seq_len", config.block_size))
        elif f.name != "vocab_size":
            fields.append((bench_name(f.name), getattr(config, f.name)))
    return fields


def check_init_from(cfg: RunConfig, source=None) -> None:
    """ValueError naming the first bench field whose value differs from `model.init_from`'s
    model (`source`: its model config, read from the source when None); no-op when unset."""
    folder = cfg.model.init_from
    if folder is None:
        return
    source = source or source_config(folder)
    want = model_config(cfg)
    if type(want) is not type(source):
        raise ValueError(f"model.kind={cfg.model.kind!r} differs from {folder}'s "
                         f"{type(source).__name__}")
    for f in dataclasses.fields(want):
        mine, theirs = getattr(want, f.name), getattr(source, f.name)
        if f.name == "block_size":
            fits = mine <= theirs if cfg.model.kind == "llama" else mine == theirs
            if not fits:
                raise ValueError(f"data.seq_len={mine} does not fit {folder}, whose model has "
                                 f"{theirs} positions")
        elif f.name == "vocab_size" and mine != theirs:
            raise ValueError(f"{folder} has a vocabulary of {theirs} tokens, the data "
                             f"{mine} (data.tokenizer={cfg.data.tokenizer!r}); give the model's "
                             "tokenizer as data.tokenizer, or start from a byte-level model "
                             "such as one `normlab export` wrote")
        elif mine != theirs:
            raise ValueError(f"{bench_name(f.name)}={mine!r} differs from {folder}'s "
                             f"{theirs!r}; `--init-from` sets it from the source: drop the --set")


def load_initial_weights(model: nn.Module, cfg: RunConfig) -> None:
    """Copy the weights of `cfg.model.init_from` into `model` (after `check_init_from`)."""
    folder = cfg.model.init_from
    if folder is None:
        return
    if is_run_dir(folder):
        check_init_from(cfg)
        source, _ = run_model(folder)
    else:
        source = _hf().from_hf(folder)
        check_init_from(cfg, source.config)
    weights = source.state_dict()
    model.load_state_dict({name: weights[name].to(value.dtype) for name, value in
                           model.state_dict().items()}, strict=True)
