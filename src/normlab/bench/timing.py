"""Speed and memory of each arm, measured apart from training so that differences mean something.

Timing a run while it trains measures the machine as much as the arm: arms run one after the
other, minutes apart, on a machine whose load drifts (±20 % between runs on a shared CPU). The
timing pass instead builds each arm's model as training does and times `steps` of its exact
training step (`train.train_step`, after `warmup` untimed ones) back to back with the same
number of steps of the baseline arm (pre/layernorm, built once and kept), `rounds` times, the
baseline going first in every other pair. Each pair is seconds apart, so its ratio is free of
the drift between arms; the report gives the median ratio over the pairs and its range, and
calls a difference whose range contains 1 noise. The baseline is timed against itself the same
way, which shows the noise floor.

Memory is the peak of the tensors one training step holds (parameters, gradients, optimizer
state, activations, temporaries): the CUDA allocator's `max_memory_allocated` on a GPU,
PyTorch's `MemTracker` (torch.distributed._tools, which follows every tensor's storage) on CPU.
It is measured once per arm.

Arms that differ only in their seed (or in what they record) have the same cost and are timed
once. The result is written to OUT/timing.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from normlab.bench.config import RunConfig, from_dict
from normlab.bench.metrics import write_atomic
from normlab.bench.rundir import config_hash
from normlab.bench.runs import BASELINE, TIMING
from normlab.bench.runtime import Runtime
from normlab.bench.train import LoopState, prepare, train_step

COST_NEUTRAL = (("train", "seed"), ("train", "diagnose_every"), ("data", "cache_dir"))


def cost_key(cfg: RunConfig) -> str:
    """The hash of `cfg` without the fields that do not change a step's cost."""
    config = cfg.to_dict()
    for section, key in COST_NEUTRAL:
        config[section].pop(key, None)
    return config_hash(config)


def _peak_tensor_bytes(s, state: LoopState) -> int | None:
    """The tensors' peak over one training step (see the module docstring)."""
    device = s.rt.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        train_step(s, state)
        return torch.cuda.max_memory_allocated(device)
    try:
        from torch.distributed._tools.mem_tracker import MemTracker
    except ImportError:  # a torch built without distributed
        return None
    tracker = MemTracker()
    tracker.track_external(s.model, s.optimizer)
    with tracker:
        train_step(s, state)
    return int(tracker.get_tracker_snapshot("peak")[device]["Total"])


class _Subject:
    """One arm's model and optimizer, built as training builds them and warmed up, to time.

    Nothing is written: the config records no diagnostics and no step is logged or saved. The
    learning rate is 0, so that every arm, a diverging one too, does the same work at every
    step (the model stays at its initialization; the cost of a step does not depend on it)."""

    def __init__(self, cfg: RunConfig, rt: Runtime, out: Path, warmup: int):
        quiet = from_dict(RunConfig, cfg.to_dict())
        quiet.train.diagnose_every = 0
        quiet.optim.lr, quiet.train.spike_threshold = 0.0, 0.0
        self.session, self.state = prepare(quiet, rt, out), LoopState()
        for _ in range(warmup):
            train_step(self.session, self.state)

    def peak_tensor_bytes(self) -> int | None:
        return _peak_tensor_bytes(self.session, self.state)

    def tokens_per_s(self, steps: int) -> float:
        device = self.session.rt.device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            train_step(self.session, self.state)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return self.session.tokens_per_step * steps / (time.perf_counter() - t0)


def _is_baseline(cfg: RunConfig) -> bool:
    return (cfg.placement.name.lower(), cfg.norm.name.lower()) == BASELINE


def measure(arms: list[tuple[str, RunConfig]], out: Path, rt: Runtime, *, rounds: int = 3,
            steps: int = 4, warmup: int = 2) -> dict[str, Any]:
    """Time every distinct arm against the baseline, in `rounds` adjacent pairs, and write
    OUT/timing.json (see the module docstring)."""
    distinct: dict[str, tuple[str, RunConfig]] = {}
    for name, cfg in arms:
        distinct.setdefault(cost_key(cfg), (name, cfg))
    base_name, base_cfg = next(((n, c) for n, c in distinct.values() if _is_baseline(c)),
                               (None, None))
    base = _Subject(base_cfg, rt, out, warmup) if base_cfg is not None else None
    measured: dict[str, dict[str, Any]] = {}
    for key, (name, cfg) in distinct.items():
        subject = base if name == base_name else _Subject(cfg, rt, out, warmup)
        speeds, base_speeds = [], []
        for r in range(rounds):
            if base is not None and r % 2:
                base_speeds.append(base.tokens_per_s(steps))
            speeds.append(subject.tokens_per_s(steps))
            if base is not None and not r % 2:
                base_speeds.append(base.tokens_per_s(steps))
        measured[key] = {"tokens_per_s": speeds, "baseline_tokens_per_s": base_speeds or None,
                         "peak_tensor_bytes": subject.peak_tensor_bytes()}
        del subject
    result = {
        "rounds": rounds, "steps": steps, "warmup": warmup, "device": str(rt.device),
        "threads": torch.get_num_threads(), "baseline": base_name,
        "arms": {name: {"cost_key": cost_key(cfg), **measured[cost_key(cfg)]}
                 for name, cfg in arms},
    }
    write_atomic(Path(out) / TIMING, json.dumps(result, indent=2) + "\n")
    return result
