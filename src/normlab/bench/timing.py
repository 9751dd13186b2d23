"""Speed and memory of each arm, measured apart from training so that differences mean something.

Timing a run while it trains measures the machine as much as the arm: arms run one after the
other, minutes apart, on a machine whose load drifts (±20 % between runs on a shared CPU). The
timing pass instead builds each arm's model as training does and times `steps` of its exact
training step (`train.train_step`) after `warmup` untimed ones, arm after arm, for `rounds`
rounds, each round in a rotated order. Every round yields each arm's speed relative to the
baseline arm of *that* round; the report gives the median ratio and its range over rounds, and
calls a difference whose range contains 1 noise.

Memory is the peak of the tensors one training step holds (parameters, gradients, optimizer
state, activations, temporaries): the CUDA allocator's `max_memory_allocated` on a GPU,
PyTorch's `MemTracker` (torch.distributed._tools, which follows every tensor's storage) on CPU.
It is measured once per arm, in the first round.

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
from normlab.bench.runs import TIMING
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


def _time_arm(cfg: RunConfig, rt: Runtime, out: Path, *, steps: int, warmup: int,
              memory: bool) -> tuple[float, int | None]:
    """(tokens/s over `steps` timed training steps, the step's peak tensor bytes or None).

    Nothing is written: `cfg` records no diagnostics and no step is logged or saved. The
    learning rate is 0, so that every arm, a diverging one too, does the same work at every
    step (the model stays at its initialization; the cost of a step does not depend on it)."""
    quiet = from_dict(RunConfig, cfg.to_dict())
    quiet.train.diagnose_every = 0
    quiet.optim.lr, quiet.train.spike_threshold = 0.0, 0.0
    s = prepare(quiet, rt, out)
    state = LoopState()
    for _ in range(warmup):
        train_step(s, state)
    peak = _peak_tensor_bytes(s, state) if memory else None
    if rt.device.type == "cuda":
        torch.cuda.synchronize(rt.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(s, state)
    if rt.device.type == "cuda":
        torch.cuda.synchronize(rt.device)
    return s.tokens_per_step * steps / (time.perf_counter() - t0), peak


def measure(arms: list[tuple[str, RunConfig]], out: Path, rt: Runtime, *, rounds: int = 3,
            steps: int = 4, warmup: int = 2) -> dict[str, Any]:
    """Time every distinct arm (interleaved, `rounds` times) and write OUT/timing.json."""
    distinct: dict[str, tuple[str, RunConfig]] = {}
    for name, cfg in arms:
        distinct.setdefault(cost_key(cfg), (name, cfg))
    order = list(distinct)
    speeds: dict[str, list[float]] = {key: [] for key in order}
    peaks: dict[str, int | None] = {}
    for r in range(rounds):
        shift = r % len(order)
        for key in order[shift:] + order[:shift]:
            _, cfg = distinct[key]
            speed, peak = _time_arm(cfg, rt, out, steps=steps, warmup=warmup, memory=r == 0)
            speeds[key].append(speed)
            if r == 0:
                peaks[key] = peak
    result = {
        "rounds": rounds, "steps": steps, "warmup": warmup, "device": str(rt.device),
        "threads": torch.get_num_threads(),
        "arms": {name: {"cost_key": cost_key(cfg), "tokens_per_s": speeds[cost_key(cfg)],
                        "peak_tensor_bytes": peaks[cost_key(cfg)]} for name, cfg in arms},
    }
    write_atomic(Path(out) / TIMING, json.dumps(result, indent=2) + "\n")
    return result
