"""Presets and sweeps: where a run's config is resolved and checked in full.

    cfg, sweep = load_preset("quick", ["optim.lr=3e-3", "train.steps=50"])
    arms = expand(cfg, sweep)            # [(name, RunConfig), ...]

A preset is a YAML file in `normlab/bench/presets/` (or a path to one) whose keys mirror
`RunConfig`. An optional `sweep:` mapping turns it into a grid: each key is a dotted field name
and each value a list; the arms are the Cartesian product, in the order written. An override
of a swept field with a single value pins that axis; an override with a list makes it an axis.
An optional `recipes:` mapping gives a norm the settings its paper uses (`RunConfig.recipes`);
an override of a field that a recipe sets takes that field out of every recipe.

Every config that leaves this module has passed both checks: the bench's own rules
(`config.validate`) and the model's, by building its model config (`model.model_config`), so
an unknown placement or a bad option stops the command before any arm runs. Unknown keys,
values of the wrong type and malformed YAML raise `ValueError` naming the field, or the file
and line.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from normlab.bench.config import RunConfig, from_dict, validate
from normlab.bench.model import model_config
from normlab.configs import parse_override, set_field


def check(cfg: RunConfig) -> RunConfig:
    """`cfg` after the bench's and the model's checks (ValueError naming the field)."""
    validate(cfg)
    model_config(cfg)
    return cfg


def resolve(data: dict[str, Any]) -> RunConfig:
    """A RunConfig from nested dicts (e.g. a run's config.json), checked in full."""
    return check(from_dict(RunConfig, data))


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "malformed YAML"
        raise ValueError(f"{path}{where}: not valid YAML ({problem})") from None


def preset_path(name: str) -> Path:
    """The YAML file of a named preset, or `name` itself if it is a path to a YAML file."""
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml") and as_path.is_file():
        return as_path
    folder = resources.files("normlab.bench") / "presets"
    candidate = folder / f"{name}.yaml"
    if not candidate.is_file():
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(list_presets())}")
    return Path(str(candidate))


def list_presets() -> list[str]:
    folder = resources.files("normlab.bench") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


Sweep = dict[str, list[Any]]


def read_preset(name: str) -> dict[str, Any]:
    """The raw mapping of a preset's YAML file (ValueError if it is not a mapping)."""
    raw = _read_yaml(preset_path(name)) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"preset {name!r} must be a mapping at the top level")
    return raw


def load_preset(name: str, overrides: Sequence[str | tuple[str, Any]] = ()
                ) -> tuple[RunConfig, Sweep]:
    """The base config and the sweep axes of a preset, with `overrides` applied in order:
    `key=value` texts as on the command line, or (key, value) pairs already parsed. Its
    `claims:` section, read by `normlab.study.claims`, plays no part in a run."""
    raw = read_preset(name)
    sweep_raw = raw.pop("sweep", None) or {}
    raw.pop("description", None)
    raw.pop("claims", None)
    cfg = from_dict(RunConfig, raw)
    sweep: Sweep = {}
    for key, values in sweep_raw.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"sweep.{key}: expected a non-empty list, got {values!r}")
        sweep[key] = list(values)
    for override in overrides:
        key, value = parse_override(override) if isinstance(override, str) else override
        if isinstance(value, list):
            sweep[key] = value
        else:
            set_field(cfg, key, value)
            sweep.pop(key, None)
        for recipe in cfg.recipes.values():  # what the user sets wins over a recipe
            recipe.pop(key, None)
    return check(cfg), sweep


def arm_name(point: dict[str, Any]) -> str:
    """A short, file-system friendly name for one grid point, e.g. `pre-layernorm-s0`."""
    parts = []
    for key, value in point.items():
        leaf = key.rsplit(".", 1)[-1]
        text = str(value).replace("/", "_").replace(" ", "")
        if key == "train.seed":
            parts.append(f"s{text}")
        elif key in ("placement.name", "norm.name"):
            parts.append(text)
        else:
            parts.append(f"{leaf}{text}")
    return "-".join(parts) or "run"


def expand(cfg: RunConfig, sweep: Sweep) -> list[tuple[str, RunConfig]]:
    """Every arm of the grid: (name, config), validated, in preset order."""
    arms = []
    keys = list(sweep)
    for values in itertools.product(*(sweep[k] for k in keys)):
        point = dict(zip(keys, values, strict=True))
        arm = from_dict(RunConfig, cfg.to_dict())
        for key, value in point.items():
            set_field(arm, key, value)
        arms.append((arm_name(point), check(arm)))
    names = [name for name, _ in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"sweep arms have clashing names: {names}")
    return arms
