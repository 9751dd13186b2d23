"""Run and sweep directories read back from disk: the runs, their arms, the sweep's timing.

    runs = find_runs([Path("runs/quick-...")])
    arms = group_arms(runs)      # runs of the same config over seeds

No model and no torch: everything comes from the JSON files a run leaves behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from normlab.bench.diagnostics import FILE as DIAGNOSTICS
from normlab.bench.metrics import read_json, read_metrics, summarize

TIMING = "timing.json"  # written by bench/timing.py into a sweep directory
BASELINE = ("pre", "layernorm")  # (placement, norm) of the arm others are compared with


@dataclass
class Run:
    """One run directory as read back from disk."""

    path: Path
    config: dict[str, Any]
    records: list[dict[str, Any]]
    status: str
    summary: dict[str, Any]
    error: str | None = None
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    timing: dict[str, Any] | None = None  # the timing.json of the sweep it belongs to

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class Arm:
    """The runs of one configuration over seeds."""

    label: str
    runs: list[Run] = field(default_factory=list)

    @property
    def completed(self) -> list[Run]:
        return [r for r in self.runs if r.status == "completed"]


def read_run(path: Path) -> Run:
    """One run directory (ValueError naming the file if one is malformed)."""
    path = Path(path)
    config = read_json(path / "config.json")
    records = read_metrics(path / "metrics.jsonl")
    summary = summarize(records)
    saved = read_json(path / "summary.json") if (path / "summary.json").is_file() else {}
    if summary["diverged_step"] is not None:
        status = "diverged"
    else:
        status = saved.get("status", "incomplete")
    return Run(path, config, records, status, summary, saved.get("error"),
               read_metrics(path / DIAGNOSTICS))


def find_runs(paths: list[Path]) -> list[Run]:
    """Every run under `paths`: a run directory (config.json) or a sweep (arms/*/config.json)."""
    runs = []
    for path in map(Path, paths):
        if (path / "config.json").is_file():
            runs.append(read_run(path))
        elif (path / "arms").is_dir():
            timing = read_json(path / TIMING) if (path / TIMING).is_file() else None
            for arm_dir in sorted((path / "arms").iterdir()):
                if (arm_dir / "config.json").is_file():
                    runs.append(read_run(arm_dir))
                    runs[-1].timing = timing
        else:
            raise ValueError(f"{path} is neither a run directory (config.json) nor a sweep "
                             "directory (arms/)")
    if not runs:
        raise ValueError(f"no runs found under {[str(p) for p in paths]}")
    return runs


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and key not in ("kwargs",):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = json.dumps(value, sort_keys=True) if isinstance(value, dict) \
                else value
    return out


def group_arms(runs: list[Run]) -> list[Arm]:
    """Runs grouped by config minus the seed; labelled placement/norm plus what else differs."""
    flats = [_flat(r.config) for r in runs]
    ignored = {"train.seed", "data.cache_dir", "train.diagnose_every"}
    differing = sorted(k for k in set().union(*flats) - ignored
                       if len({json.dumps(f.get(k)) for f in flats}) > 1
                       and k not in ("placement.name", "norm.name"))
    arms: dict[str, Arm] = {}
    for run, flat in zip(runs, flats, strict=True):
        label = f"{flat['placement.name']}/{flat['norm.name']}"
        extra = ",".join(f"{k}={flat.get(k)}" for k in differing)
        label = f"{label} [{extra}]" if extra else label
        arms.setdefault(label, Arm(label)).runs.append(run)
    return list(arms.values())
