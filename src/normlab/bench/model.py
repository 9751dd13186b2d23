"""The model a bench config describes, its config built from the bench config by field name.

    model_config(cfg)   # a GPTConfig, LlamaConfig, NGPTConfig or ViTConfig: the model's checks
    build_model(cfg)    # the GPT, Llama, nGPT or ViT itself
    weight_projection(cfg, model)   # what the trainer calls after every optimizer step, or None

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
from collections.abc import Callable

from torch import nn

from normlab.bench.config import ModelConfig, RunConfig, with_recipe
from normlab.bench.data import data_class
from normlab.models import GPT, NGPT, GPTConfig, Llama, LlamaConfig, NGPTConfig, ViT, ViTConfig
from normlab.weights import UnitNormProjection

KINDS: dict[str, tuple[type, type[nn.Module]]] = {"gpt": (GPTConfig, GPT),
                                                  "vit": (ViTConfig, ViT),
                                                  "llama": (LlamaConfig, Llama),
                                                  "ngpt": (NGPTConfig, NGPT)}
# kind -> the projection its weights need after every optimizer step (nGPT's unit-norm rows)
PROJECTIONS: dict[str, Callable[[nn.Module], Callable[[], None]]] = {
    "ngpt": lambda model: UnitNormProjection(model.unit_norm_matrices()).project,
}
# model-config field -> where the bench config holds it, when not `model.<same name>`
SOURCES = {"norm": "norm.name", "norm_kwargs": "norm.kwargs",
           "norm_kwargs_by_position": "norm.kwargs_by_position", "placement": "placement.name",
           "placement_kwargs": "placement.kwargs", "block_size": "data.seq_len"}


def bench_name(field: str) -> str:
    """Where the bench config holds model-config field `field` (e.g. `norm.kwargs`)."""
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
        named = [bench_name(f) for f in fields if re.search(rf"\b{f}\b", str(error))]
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


def weight_projection(cfg: RunConfig, model: nn.Module) -> Callable[[], None] | None:
    """The function the trainer calls after every optimizer step for this kind of model (nGPT:
    every matrix back on the unit sphere), None for the others. For nGPT it warns when weight
    decay or warmup is on: the paper trains it with neither."""
    projection = PROJECTIONS.get(cfg.model.kind)
    if projection is None:
        return None
    if cfg.optim.weight_decay or cfg.schedule.warmup_steps:
        warnings.warn(f"model.kind {cfg.model.kind!r} is trained without weight decay and "
                      f"warmup in its paper; this run has optim.weight_decay="
                      f"{cfg.optim.weight_decay} and schedule.warmup_steps="
                      f"{cfg.schedule.warmup_steps}", stacklevel=2)
    return projection(model)
