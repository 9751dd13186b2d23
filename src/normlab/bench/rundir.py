"""The output-directory contract: a run or sweep folder holds the results of one config only.

Every run directory records its full resolved config (config.json) and that config's SHA-256
(`config_sha256` in run.json); every sweep directory records its arms and their hashes
(sweep.json). Before anything is written:

    claim_run_dir(path, cfg, resume=False, overwrite=False)

refuses an existing run unless it is continued with the same config (`resume`) or started
afresh (`overwrite`), and

    claim_sweep_dir(path, arms, overwrite=False)

reuses an arm only when its recorded config equals the requested one, and refuses, naming the
differing fields, when it does not or when the folder holds arms the sweep does not ask for.
`--overwrite` empties only folders that normlab wrote (a run or a sweep); any other non-empty
folder is refused, so no user file is ever removed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from normlab.bench.config import RunConfig
from normlab.bench.metrics import read_json, write_atomic

RUN_MARKER = "run.json"
SWEEP_MARKER = "sweep.json"


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of the config's canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def config_diff(saved: Any, current: Any, defaults: Any = None, prefix: str = "") -> list[str]:
    """The differences between a saved and a requested config, as "field: saved != requested".

    A field missing from the saved config (one added to `RunConfig` after it was written)
    counts as its default, taken from `defaults` (same nesting; the `RunConfig` defaults when
    None at the top); a key that has no default (inside a kwargs mapping, or a field that was
    removed) is a difference.
    """
    if defaults is None and not prefix:
        defaults = dataclasses.asdict(RunConfig())
    if isinstance(saved, dict) and isinstance(current, dict):
        defaults = defaults if isinstance(defaults, dict) else {}
        diffs = []
        for key in sorted(set(saved) | set(current)):
            default = defaults.get(key)
            diffs += config_diff(saved.get(key, default), current.get(key), default,
                                 f"{prefix}{key}.")
        return diffs
    return [] if saved == current else [f"{prefix.rstrip('.')}: {saved!r} != {current!r}"]


def _is_normlab_output(path: Path) -> bool:
    return (path / RUN_MARKER).is_file() or (path / "config.json").is_file() \
        or (path / SWEEP_MARKER).is_file()


def _refuse_foreign(path: Path) -> None:
    """Refuse an `--out` that is a file, or a non-empty folder that normlab did not write."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} is a file, not a directory")
    if path.is_dir() and any(path.iterdir()) and not _is_normlab_output(path):
        raise ValueError(f"--out {path} is not empty and holds no normlab run or sweep; "
                         "choose an empty or new directory (--overwrite never removes it)")


def _empty_for_overwrite(path: Path) -> None:
    """Remove a run or sweep folder that normlab wrote; refuse anything else."""
    _refuse_foreign(path)
    if path.exists():
        shutil.rmtree(path)


def saved_config(run_dir: Path) -> dict[str, Any]:
    """The config.json of a run directory (ValueError naming the file if it is unreadable)."""
    config = read_json(Path(run_dir) / "config.json")
    if not isinstance(config, dict):
        raise ValueError(f"{Path(run_dir) / 'config.json'}: expected a JSON object")
    return config


def mismatch(run_dir: Path, cfg: RunConfig) -> list[str]:
    """How the config recorded in `run_dir` differs from `cfg` ([] when it is the same)."""
    return config_diff(saved_config(run_dir), cfg.to_dict())


def claim_run_dir(run_dir: Path, cfg: RunConfig, *, resume: bool = False,
                  overwrite: bool = False) -> None:
    """Make sure `run_dir` may receive the run `cfg` describes (see the module docstring)."""
    run_dir = Path(run_dir)
    if overwrite:
        _empty_for_overwrite(run_dir)
        return
    _refuse_foreign(run_dir)
    if (run_dir / SWEEP_MARKER).is_file():
        raise ValueError(f"{run_dir} holds a sweep, not a run; choose another --out (a sweep's "
                         "runs are in its arms/ folder)")
    if not (run_dir / "config.json").is_file():
        return
    if not resume:
        raise ValueError(f"{run_dir} already holds a run; continue it with "
                         f"`normlab train --resume {run_dir}`, or start it afresh with "
                         "--overwrite")
    diffs = mismatch(run_dir, cfg)
    if diffs:
        raise ValueError(f"{run_dir} holds a run of another config ({'; '.join(diffs[:5])}); "
                         "it cannot be continued with this one")


def record_run(run_dir: Path, cfg: RunConfig) -> None:
    """Write config.json and run.json (the config's hash) into `run_dir`."""
    config = cfg.to_dict()
    write_atomic(run_dir / "config.json", cfg.to_json() + "\n")
    write_atomic(run_dir / RUN_MARKER, json.dumps(
        {"config_sha256": config_hash(config)}, indent=2) + "\n")


def claim_sweep_dir(out: Path, arms: list[tuple[str, RunConfig]], *,
                    overwrite: bool = False) -> None:
    """Make sure the sweep directory `out` holds nothing but (finished or partial) runs of
    `arms` with the same configs; refuse naming the first conflicts otherwise."""
    out = Path(out)
    if overwrite:
        _empty_for_overwrite(out)
        return
    _refuse_foreign(out)
    if (out / "config.json").is_file():
        raise ValueError(f"{out} holds a single run, not a sweep; choose another --out")
    folder = out / "arms"
    if not folder.is_dir():
        return
    wanted = dict(arms)
    conflicts = []
    for run_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        if run_dir.name not in wanted:
            conflicts.append(f"arm {run_dir.name!r} is not part of this sweep")
        elif (run_dir / "config.json").is_file():
            diffs = mismatch(run_dir, wanted[run_dir.name])
            if diffs:
                conflicts.append(f"arm {run_dir.name!r} was run with another config "
                                 f"({'; '.join(diffs[:3])})")
    if conflicts:
        more = f" (and {len(conflicts) - 3} more)" if len(conflicts) > 3 else ""
        raise ValueError(f"{out} holds another sweep: {'; '.join(conflicts[:3])}{more}; "
                         "choose another --out, or start afresh with --overwrite")


def record_sweep(out: Path, arms: list[tuple[str, RunConfig]]) -> None:
    """Write sweep.json: each arm's resolved config and its hash."""
    write_atomic(out / SWEEP_MARKER, json.dumps({"arms": {
        name: {"config_sha256": config_hash(cfg.to_dict()), "config": cfg.to_dict()}
        for name, cfg in arms}}, indent=2) + "\n")
