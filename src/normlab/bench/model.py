"""The model a bench config describes, its config built from the bench config by field name.

    model_config(cfg)   # a GPTConfig, LlamaConfig or ViTConfig: the model's own checks run here
    build_model(cfg)    # the GPT, Llama or ViT itself
    hf_architecture("out/hf")     # the bench fields of a transformers folder (--init-from)
    load_initial_weights(model, cfg)   # its weights, when `model.init_from` names one

A field of the model config is filled from, in order: what the data fixes (the vocabulary, the
window length, the image shape: `TextData.model_fields` / `DigitsData.model_fields`), the
norm and placement sections (`norm.name` → `norm`, `norm.kwargs` → `norm_kwargs`, ...), and the
`model` section field of the same name, after the recipe of the arm's norm (`recipes`, e.g.
DyT's embedding gain and α₀) has set its fields. A `model` field that the chosen kind does not have
(a GPT-only one on a ViT) is ignored with a warning when it is not at its default.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from normlab.bench.config import ModelConfig, RunConfig, with_recipe
from normlab.bench.data import data_class
from normlab.models import GPT, GPTConfig, Llama, LlamaConfig, ViT, ViTConfig

KINDS: dict[str, tuple[type, type[nn.Module]]] = {"gpt": (GPTConfig, GPT),
                                                  "vit": (ViTConfig, ViT),
                                                  "llama": (LlamaConfig, Llama)}
# model-config field -> where the bench config holds it, when not `model.<same name>`
SOURCES = {"norm": "norm.name", "norm_kwargs": "norm.kwargs",
           "norm_kwargs_by_position": "norm.kwargs_by_position", "placement": "placement.name",
           "placement_kwargs": "placement.kwargs", "block_size": "data.seq_len"}


def _bench_name(field: str) -> str:
    return SOURCES.get(field, f"model.{field}")


def _values(cfg: RunConfig, config_class: type) -> dict:
    fields = {f.name for f in dataclasses.fields(config_class)}
    values = {f: getattr(cfg.model, f) for f in fields if hasattr(cfg.model, f)}
    values.update(norm=cfg.norm.name, norm_kwargs=dict(cfg.norm.kwargs),
                  norm_kwargs_by_position=dict(cfg.norm.kwargs_by_position),
                  placement=cfg.placement.name, placement_kwargs=dict(cfg.placement.kwargs))
    values.update(data_class(cfg.data).model_fields(cfg.data))
    values.pop("kind", None)
    return {k: v for k, v in values.items() if k in fields}


def model_config(cfg: RunConfig):
    """The model config (GPTConfig, ...) of `cfg` with its norm's recipe applied; its own
    checks' errors name the bench fields."""
    cfg = with_recipe(cfg)
    config_class, _ = KINDS[cfg.model.kind]
    try:
        return config_class(**_values(cfg, config_class))
    except (ValueError, TypeError) as error:
        fields = [f.name for f in dataclasses.fields(config_class)]
        named = [_bench_name(f) for f in fields if re.search(rf"\b{f}\b", str(error))]
        where = f"{', '.join(named)}: " if named else ""
        raise ValueError(f"{where}{error}") from None


def unused_model_fields(cfg: RunConfig) -> list[str]:
    """`model` fields set away from their default that the chosen kind has no use for."""
    cfg = with_recipe(cfg)
    config_class, _ = KINDS[cfg.model.kind]
    own = {f.name for f in dataclasses.fields(config_class)} | {"kind", "init_from"}
    default = ModelConfig()
    return [f"model.{f.name}" for f in dataclasses.fields(ModelConfig)
            if f.name not in own and getattr(cfg.model, f.name) != getattr(default, f.name)]


def build_model(cfg: RunConfig) -> nn.Module:
    """The model that `cfg` describes (norm and placement from the config)."""
    unused = unused_model_fields(cfg)
    if unused:
        warnings.warn(f"{', '.join(unused)} apply to another model kind; the "
                      f"{cfg.model.kind} ignores them", stacklevel=2)
    _, model_class = KINDS[cfg.model.kind]
    return model_class(model_config(cfg))


def _hf():
    try:
        import normlab.hf as hf
    except ImportError:
        raise ValueError("model.init_from needs transformers: pip install 'normlab[hf]'") from None
    return hf


def hf_architecture(folder: str) -> list[tuple[str, Any]]:
    """The bench fields that give a run the architecture of the `transformers` folder `folder`.

    Every field of its normlab model config (`normlab.hf.config_from_hf`) under its bench name,
    `model.kind`, `model.init_from` itself, for a GPT (learned positions) `data.seq_len`, and
    `data.tokenizer` when the folder holds a tokenizer.json and a vocabulary other than bytes.
    `check_init_from` refuses a folder whose vocabulary is not the data's.
    """
    config = _hf().config_from_hf(folder)
    kind = next(k for k, (config_class, _) in KINDS.items() if type(config) is config_class)
    fields = [("model.kind", kind), ("model.init_from", str(folder))]
    if config.vocab_size != 256 and (Path(folder) / "tokenizer.json").is_file():
        fields.append(("data.tokenizer", str(folder)))
    for f in dataclasses.fields(config):
        if f.name == "block_size":
            if kind == "gpt":
                fields.append(("data.seq_len", config.block_size))
        elif f.name != "vocab_size":
            fields.append((_bench_name(f.name), getattr(config, f.name)))
    return fields


def check_init_from(cfg: RunConfig, source: GPTConfig | LlamaConfig | None = None) -> None:
    """ValueError naming the first bench field whose value differs from `model.init_from`'s.

    `source` is the folder's model config (read from the folder when None). The window may be
    shorter than a rotary model's `max_position_embeddings`, never longer, and must equal a
    GPT's number of learned positions. No-op when `model.init_from` is unset.
    """
    folder = cfg.model.init_from
    if folder is None:
        return
    source = source or _hf().config_from_hf(folder)
    want = model_config(cfg)
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
            raise ValueError(f"{_bench_name(f.name)}={mine!r} differs from {folder}'s "
                             f"{theirs!r}; `--init-from` sets it from the folder: drop the --set")


def load_initial_weights(model: nn.Module, cfg: RunConfig) -> None:
    """Copy the weights of `cfg.model.init_from` (a `transformers` folder) into `model`.

    The folder's architecture must be the config's (`check_init_from`); no-op when unset.
    """
    if cfg.model.init_from is None:
        return
    source = _hf().from_hf(cfg.model.init_from)
    check_init_from(cfg, source.config)
    weights = source.state_dict()
    model.load_state_dict({name: weights[name].to(value.dtype) for name, value in
                           model.state_dict().items()}, strict=True)
