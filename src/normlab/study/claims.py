"""A claim of the literature as data: the `claims:` section of a bench preset.

    claims = load_claims("claim-3")          # [Claim(id="3a", ...)], validated
    name, cfg = arm_run(claims[0].arm, seed=4)

Each entry of a preset's `claims:` list says which two arms are compared and what the paper
claims about their paired difference Δ = metric(arm) − metric(baseline):

    claims:
      - id: 3a
        statement: LayerNorm Scaling beats Pre-LN at equal budget in deeper models
        paper: Sun et al., NeurIPS 2025
        paper_number: LLaMA-1B C4 ppl 17.02 → 15.71
        arm: {placement.name: lns}           # values of the preset's sweep axes (no seed)
        baseline: {placement.name: pre}      # `preset: NAME` takes the arm from another preset
        expect: lower                        # lower | higher | matches (then `margin: 0.02`)
        metric: final_val_loss               # default; any number of a run's summary below
        budget: 8                            # seeds at most (default 8)

An arm is one point of its preset's sweep with the seed left free: every sweep axis other than
`train.seed` must be pinned, by the selector or by having a single value. The run of seed k is
the preset's own arm of that seed (same name, same config), so `normlab bench --preset NAME`
and `normlab study` share their run directories.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from normlab.bench.config import RunConfig
from normlab.bench.presets import (
    arm_name,
    expand,
    list_presets,
    load_preset,
    preset_path,
    read_preset,
)
from normlab.study.sequential import DEFAULT_BUDGET, check_expectation, look_level

METRICS = ("final_val_loss", "best_val_loss", "final_train_loss", "final_val_acc")
REQUIRED = ("id", "statement", "paper", "arm", "baseline", "expect")
OPTIONAL = ("paper_number", "margin", "metric", "budget")
SEED = "train.seed"


def folder_name(preset: str) -> str:
    """The folder of a preset's runs and summary: its name, or a YAML file's stem."""
    return Path(preset).stem


@dataclass(frozen=True)
class ArmRef:
    """One arm of a preset's sweep, the seed left free."""

    preset: str
    point: dict[str, Any] = field(hash=False)

    @property
    def label(self) -> str:
        return f"{folder_name(self.preset)}:{arm_name(self.point)}"


@dataclass(frozen=True)
class Claim:
    id: str
    preset: str
    statement: str
    paper: str
    arm: ArmRef
    baseline: ArmRef
    expect: str
    margin: float | None = None
    metric: str = "final_val_loss"
    budget: int = DEFAULT_BUDGET
    paper_number: str = ""

    @property
    def runs(self) -> tuple[ArmRef, ArmRef]:
        return self.arm, self.baseline


def arm_run(ref: ArmRef, seed: int, overrides: list[str] = ()) -> tuple[str, RunConfig]:
    """The (name, config) of `ref`'s run at `seed`: the preset's own arm of that seed.

    Resolved once per process and preset file version (the config is shared: read it only).
    """
    version = preset_path(ref.preset).stat().st_mtime_ns
    return _arm_run(ref.preset, version, json.dumps(ref.point, sort_keys=True), seed,
                    tuple(overrides))


@functools.lru_cache(maxsize=1024)
def _arm_run(preset: str, version: int, point_json: str, seed: int,
             overrides: tuple[str, ...]) -> tuple[str, RunConfig]:
    ref = ArmRef(preset, json.loads(point_json))
    cfg, sweep = load_preset(ref.preset, list(overrides))
    unknown = sorted(set(ref.point) - set(sweep))
    if unknown:
        raise ValueError(f"{ref.label}: {', '.join(unknown)} is not a sweep axis of preset "
                         f"{ref.preset!r}")
    pinned: dict[str, list[Any]] = {}
    for key, values in sweep.items():
        if key == SEED:
            pinned[key] = [seed]
        elif key in ref.point:
            if ref.point[key] not in values:
                raise ValueError(f"{ref.label}: {key}={ref.point[key]!r} is not among the "
                                 f"values of preset {ref.preset!r}'s sweep ({values})")
            pinned[key] = [ref.point[key]]
        elif len(values) == 1:
            pinned[key] = values
        else:
            raise ValueError(f"{ref.label}: the arm does not pin the sweep axis {key} of preset "
                             f"{ref.preset!r} (values {values})")
    pinned.setdefault(SEED, [seed])
    ((name, run_cfg),) = expand(cfg, pinned)
    return name, run_cfg


def _arm_ref(raw: Any, preset: str, where: str) -> ArmRef:
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{where}: expected a mapping of sweep-axis values, got {raw!r}")
    point = dict(raw)
    other = point.pop("preset", preset)
    if not isinstance(other, str):
        raise ValueError(f"{where}.preset: expected a preset name, got {other!r}")
    if SEED in point:
        raise ValueError(f"{where}: {SEED} is chosen by the study, not by the claim")
    return ArmRef(other, point)


def parse_claim(raw: Any, preset: str, index: int) -> Claim:
    """One entry of `preset`'s `claims:` list, checked in full (ValueError naming the field)."""
    where = f"preset {preset!r}, claims[{index}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {raw!r}")
    missing = [k for k in REQUIRED if k not in raw]
    unknown = sorted(set(raw) - set(REQUIRED) - set(OPTIONAL))
    if missing or unknown:
        raise ValueError(f"{where}: " + "; ".join(
            ([f"missing {', '.join(missing)}"] if missing else [])
            + ([f"unknown {', '.join(unknown)} (known: {', '.join(REQUIRED + OPTIONAL)})"]
               if unknown else [])))
    for key in ("id", "statement", "paper", "paper_number"):
        if key in raw and not isinstance(raw[key], str):
            raise ValueError(f"{where}.{key}: expected a string, got {raw[key]!r}")
    metric = raw.get("metric", "final_val_loss")
    if metric not in METRICS:
        raise ValueError(f"{where}.metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    budget = raw.get("budget", DEFAULT_BUDGET)
    look_level(budget)  # an integer >= 2
    margin = raw.get("margin")
    check_expectation(raw["expect"], margin)
    claim = Claim(id=raw["id"], preset=preset, statement=raw["statement"], paper=raw["paper"],
                  arm=_arm_ref(raw["arm"], preset, f"{where}.arm"),
                  baseline=_arm_ref(raw["baseline"], preset, f"{where}.baseline"),
                  expect=raw["expect"], margin=None if margin is None else float(margin),
                  metric=metric, budget=budget, paper_number=raw.get("paper_number", ""))
    names = [arm_run(ref, 0)[0] for ref in claim.runs]  # both arms resolve to one run each
    if claim.arm.preset == claim.baseline.preset and names[0] == names[1]:
        raise ValueError(f"{where}: arm and baseline are the same run ({names[0]})")
    return claim


def load_claims(preset: str) -> list[Claim]:
    """The claims of `preset` ([] when it has no `claims:` section)."""
    raw = read_preset(preset).get("claims") or []
    if not isinstance(raw, list):
        raise ValueError(f"preset {preset!r}: claims must be a list, got {type(raw).__name__}")
    claims = [parse_claim(entry, preset, i) for i, entry in enumerate(raw)]
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise ValueError(f"preset {preset!r}: claim ids repeat: {ids}")
    return claims


def claim_presets() -> list[str]:
    """Every packaged preset with a `claims:` section, in name order."""
    return [name for name in list_presets() if read_preset(name).get("claims")]
