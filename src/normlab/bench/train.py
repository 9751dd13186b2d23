"""One training run: AdamW + warmup/cosine, clipping, AGC, autocast, eval, checkpoints.

    summary = run(cfg, Path("runs/x"))                 # fresh run (refuses an existing one)
    summary = run(cfg, Path("runs/x"), resume=True)    # continue from the latest checkpoint
    summary = run(cfg, Path("runs/x"), overwrite=True) # start afresh where a run was

The run is four named steps: `prepare` (data, model, optimizer), `restore` (the latest
checkpoint, when resuming), `train_step` (one optimizer step, or the divergence that stops the
run) and `evaluate` / `save_checkpoint` at their intervals. The same function runs under
`torchrun --nproc_per_node N` (DDP, or FSDP2 with `train.parallel=fsdp`): each rank draws its
own batches, the loss is averaged over ranks, and only rank 0 writes config.json, run.json,
metrics.jsonl, summary.json and checkpoints.

metrics.jsonl holds one JSON object per line: `{"kind": "train", "step", "loss", "lr",
"grad_norm", "tokens_per_s", "mem_bytes", "time_s"}` every `train.log_every` steps
(`mem_bytes`: the CUDA allocator's peak, null on CPU) and `{"kind": "eval", "step",
"val_loss"[, "val_acc"]}` every `train.eval_every` steps and at the end. `step` counts
optimizer steps done. A run stops early, marked diverged, when the training loss is NaN/Inf or
spikes (`diverged`). With `train.diagnose_every` > 0, rank 0 also appends the cheap diagnostics
of the training step to diagnostics.jsonl every that many steps and at the last one.

Ctrl-C (KeyboardInterrupt) in a single-process run saves a checkpoint of the last completed
step, with the data and RNG streams as they were before the interrupted step, so that resuming
continues bit for bit; it then raises `RunInterrupted`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from normlab.adapt import norm_only
from normlab.bench import checkpoint
from normlab.bench import distributed as D
from normlab.bench.config import RunConfig
from normlab.bench.data import load_data
from normlab.bench.diagnostics import FILE, TrainingDiagnostics
from normlab.bench.init_from import load_initial_weights
from normlab.bench.metrics import read_metrics, summarize, write_atomic, write_metrics
from normlab.bench.model import build_model, weight_projection
from normlab.bench.optim import (
    classifier_parameters,
    clip_gradients_,
    gpas_gate_parameters,
    learning_rate,
    make_optimizer,
)
from normlab.bench.rundir import claim_run_dir, config_hash, record_run
from normlab.bench.runtime import Runtime, resolve_precision
from normlab.models.lm import z_loss

StepCallback = Callable[[int, dict[str, Any]], None]
FINISHED = ("completed", "diverged")


class RunInterrupted(Exception):
    """Ctrl-C stopped a run; the message says where its last checkpoint is and how to go on."""


def _data_seed(seed: int, rank: int) -> int:
    return int.from_bytes(hashlib.sha256(f"data/{seed}/{rank}".encode()).digest()[:8], "big") >> 1


def _peak_memory(device: torch.device) -> int | None:
    """The allocator's peak of tensor memory on CUDA; None elsewhere (the bench's timing pass
    measures every arm's tensor peak apart from training: bench/timing.py)."""
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


@dataclass
class Session:
    """Everything one run holds while it trains."""

    cfg: RunConfig
    rt: Runtime
    run_dir: Path
    data: Any
    model: nn.Module
    wrapped: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    probe: TrainingDiagnostics
    precision: str
    scaler: torch.amp.GradScaler | None
    replicated: list[nn.Parameter]
    agc_params: list[nn.Parameter]
    gate_params: list[nn.Parameter]
    tokens_per_step: int
    num_params: int
    project: Callable[[], None] | None = None  # after every optimizer step (nGPT)

    def autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        return torch.autocast(self.rt.device.type, dtype=dtype) if dtype else nullcontext()

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"


@dataclass
class LoopState:
    """Where the loop is: optimizer steps done and what the divergence rule remembers."""

    step: int = 0
    running_min: float = math.inf
    initial_loss: float = math.nan
    records: list[dict[str, Any]] = field(default_factory=list)


def prepare(cfg: RunConfig, rt: Runtime, run_dir: Path, *, fresh: bool = True) -> Session:
    """Data, model (wrapped for DDP/FSDP), optimizer, clipping sets and the data generator.

    A `fresh` run starts from `model.init_from`'s weights when it names a folder; a resumed
    one takes every weight from its checkpoint.
    """
    if rt.fsdp(cfg) and cfg.optim.agc is not None:
        raise ValueError("optim.agc needs whole rows and vectors on each rank, but "
                         "train.parallel=fsdp shards them; use train.parallel=ddp or "
                         "optim.agc=null")
    precision = resolve_precision(cfg.precision, rt.device)
    torch.manual_seed(cfg.train.seed)
    data = load_data(cfg.data)
    model = build_model(cfg)
    if fresh and cfg.model.init_from:
        load_initial_weights(model, cfg)
    if cfg.optim.trainable != "all":
        norm_only(model, cfg.optim.trainable)
    model = model.to(rt.device)
    num_params = sum(p.numel() for p in model.parameters())
    replicated = rt.replicated_params(model, cfg)
    wrapped = rt.wrap(model, cfg, replicated)
    optimizer = make_optimizer(model, cfg.optim)  # after fully_shard, which swaps in DTensor params
    head = classifier_parameters(model) if cfg.optim.agc is not None else set()
    tokens = data.tokens_per_sample(cfg.data, cfg.model.patch_size)
    return Session(
        cfg=cfg, rt=rt, run_dir=run_dir, data=data, model=model, wrapped=wrapped,
        optimizer=optimizer,
        generator=torch.Generator().manual_seed(_data_seed(cfg.train.seed, rt.dist.rank)),
        probe=TrainingDiagnostics(model, cfg.train, run_dir / FILE, write=rt.dist.is_main),
        precision=precision,
        scaler=torch.amp.GradScaler(rt.device.type) if precision == "fp16" else None,
        replicated=replicated,
        agc_params=[p for p in model.parameters() if id(p) not in head],
        gate_params=gpas_gate_parameters(model) if cfg.optim.gate_clip else [],
        tokens_per_step=cfg.data.batch_size * tokens * rt.dist.world, num_params=num_params,
        project=weight_projection(cfg, model),
    )


def restore(s: Session, path: Path) -> LoopState:
    """Load checkpoint `path` into the session (verified against config and model)."""
    d = s.rt.dist
    # FSDP's DTensors report their global shapes, so every rank can check the manifest
    ckpt = checkpoint.load(path, config=s.cfg.to_dict(), expected=s.model.state_dict())
    if ckpt.loop["world"] != d.world:
        raise ValueError(f"checkpoint {path} was written by {ckpt.loop['world']} processes; "
                         f"resume it with --nproc_per_node {ckpt.loop['world']}")
    s.rt.load_state_dicts(s.model, s.optimizer, ckpt, s.cfg)
    torch.set_rng_state(ckpt.tensors[f"rng.cpu.{d.rank}"])
    if s.rt.device.type == "cuda":
        torch.cuda.set_rng_state(ckpt.tensors[f"rng.cuda.{d.rank}"], s.rt.device)
    s.generator.set_state(ckpt.tensors[f"data.generator.{d.rank}"])
    if s.scaler is not None:
        s.scaler.load_state_dict(ckpt.loop["scaler"])
    records = [r for r in read_metrics(s.metrics_path) if r["step"] <= ckpt.step]
    return LoopState(ckpt.step, ckpt.loop["running_min"],
                     ckpt.loop.get("initial_loss", math.nan), records)


def _streams(s: Session) -> dict[str, torch.Tensor]:
    """The RNG and data-generator states that make the next step reproducible."""
    states = {"rng.cpu": torch.get_rng_state(), "data.generator": s.generator.get_state()}
    if s.rt.device.type == "cuda":
        states["rng.cuda"] = torch.cuda.get_rng_state(s.rt.device)
    return states


def _set_streams(s: Session, states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["rng.cpu"])
    s.generator.set_state(states["data.generator"])
    if "rng.cuda" in states:
        torch.cuda.set_rng_state(states["rng.cuda"], s.rt.device)


def save_checkpoint(s: Session, state: LoopState) -> None:
    """Checkpoint the session at `state.step` (every rank takes part; rank 0 writes)."""
    d = s.rt.dist
    model_state, optim_state = s.rt.state_dicts(s.model, s.optimizer, s.cfg)
    tensors = {f"{name}.{rank}": part for name, value in _streams(s).items()
               for rank, part in enumerate(D.gather_states(value, d))}
    loop = {"running_min": state.running_min, "initial_loss": state.initial_loss,
            "world": d.world, "scaler": s.scaler.state_dict() if s.scaler is not None else None}
    if d.is_main:
        checkpoint.save(s.run_dir, state.step, model=model_state, optimizer=optim_state,
                        tensors=tensors, loop=loop, config=s.cfg.to_dict(),
                        keep=s.cfg.train.keep_checkpoints)
    D.barrier(d)


@torch.no_grad()
def evaluate(s: Session) -> dict[str, float]:
    """Mean validation loss (and accuracy where the data has classes) over the fixed
    validation batches."""
    d, model = s.rt.dist, s.wrapped
    was_training = model.training
    model.eval()
    loss_sum = correct = count = 0.0
    for inputs, targets in s.data.val_batches(s.cfg.train.eval_batches, d.rank, d.world):
        inputs, targets = inputs.to(s.rt.device), targets.to(s.rt.device)
        with s.autocast():
            logits, loss = model(inputs, targets)
        n = targets.numel()
        loss_sum += loss.float().item() * n
        correct += (logits.argmax(-1) == targets).sum().item()
        count += n
    model.train(was_training)
    loss_sum, correct, count = D.all_sum([loss_sum, correct, count], d)
    result = {"val_loss": loss_sum / count}
    if s.data.has_accuracy:
        result["val_acc"] = correct / count
    return result


def diverged(
    loss: float, running_min: float, initial_loss: float, spike_threshold: float
) -> bool:
    """A NaN/Inf loss, or a spike: above `spike_threshold` × the running minimum *and* above
    the first step's loss (0 disables the spike test). The second condition keeps a noisy batch
    from stopping a run whose loss is near 0 (a classifier at 0.1 that draws a 0.5 batch)."""
    if not math.isfinite(loss):
        return True
    return bool(spike_threshold) and loss > spike_threshold * running_min and loss > initial_loss


def train_step(s: Session, state: LoopState) -> dict[str, Any]:
    """One optimizer step from `state.step`; returns its train record, or a "diverged" record
    (and leaves the model as it was) when the loss says the run has diverged."""
    cfg, d, device = s.cfg, s.rt.dist, s.rt.device
    t0 = time.perf_counter()
    done = state.step + 1
    lr = learning_rate(state.step, cfg.train.steps, cfg.optim.lr, cfg.schedule)
    for group in s.optimizer.param_groups:
        group["lr"] = lr
    inputs, targets = s.data.train_batch(s.generator)
    inputs, targets = inputs.to(device), targets.to(device)
    with s.probe.watch(done):
        with s.autocast():
            logits, loss = s.wrapped(inputs, targets)
        objective = loss + cfg.optim.z_loss * z_loss(logits) if cfg.optim.z_loss else loss
        (s.scaler.scale(objective) if s.scaler is not None else objective).backward()
    D.average_gradients_(s.replicated, d)
    (loss_value,) = D.all_sum([loss.detach().float().item() / d.world], d)
    if math.isnan(state.initial_loss):
        state.initial_loss = loss_value
    if diverged(loss_value, state.running_min, state.initial_loss, cfg.train.spike_threshold):
        return {"kind": "diverged", "step": done, "loss": loss_value,
                "running_min": state.running_min, "initial_loss": state.initial_loss}
    state.running_min = min(state.running_min, loss_value)
    if s.scaler is not None:
        s.scaler.unscale_(s.optimizer)
    s.probe.record(done, s.scaler.get_scale() if s.scaler is not None else 1.0, lr)
    grad_norm = clip_gradients_(cfg.optim, list(s.model.parameters()),
                                agc_params=s.agc_params, gate_params=s.gate_params)
    if s.scaler is not None:
        s.scaler.step(s.optimizer)
        s.scaler.update()
    else:
        s.optimizer.step()
    if s.project is not None:
        s.project()
    s.optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    state.step = done
    return {"kind": "train", "step": done, "loss": loss_value, "lr": lr,
            "grad_norm": float(grad_norm),
            "tokens_per_s": s.tokens_per_step / (time.perf_counter() - t0),
            "mem_bytes": _peak_memory(device)}


def _log(s: Session, state: LoopState, record: dict[str, Any]) -> None:
    state.records.append(record)
    if s.rt.dist.is_main:
        with s.metrics_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def _summary(s: Session, state: LoopState, status: str, wall_s: float) -> dict[str, Any]:
    return {"status": status, **summarize(state.records), "norm": s.cfg.norm.name,
            "placement": s.cfg.placement.name, "seed": s.cfg.train.seed,
            "params": s.num_params,
            "trainable_params": sum(p.numel() for p in s.model.parameters() if p.requires_grad),
            "world_size": s.rt.dist.world, "device": str(s.rt.device),
            "precision": s.precision, "wall_s": wall_s,
            "config_sha256": config_hash(s.cfg.to_dict())}


def _loop(s: Session, state: LoopState, on_step: StepCallback | None) -> str:
    """Steps from `state.step` to the end; the run's status."""
    cfg, t_run = s.cfg.train, time.perf_counter()
    saved_at = state.step
    while state.step < cfg.steps:
        streams, before = _streams(s), state.step
        try:
            record = train_step(s, state)
            if record["kind"] == "diverged":
                _log(s, state, record)
                return "diverged"
            done = state.step
            record["time_s"] = time.perf_counter() - t_run
            if done % cfg.log_every == 0 or done == cfg.steps:
                _log(s, state, record)
            if done % cfg.eval_every == 0 or done == cfg.steps:
                _log(s, state, {"kind": "eval", "step": done, **evaluate(s)})
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                save_checkpoint(s, state)
                saved_at = done
            if on_step is not None and s.rt.dist.is_main:
                on_step(done, record)
        except KeyboardInterrupt:
            if s.rt.dist.enabled:
                raise
            _save_on_interrupt(s, state, streams if state.step == before else None, saved_at)
    return "completed"


def _save_on_interrupt(s: Session, state: LoopState, streams: dict[str, torch.Tensor] | None,
                       saved_at: int) -> None:
    """Checkpoint the last completed step after Ctrl-C, then raise `RunInterrupted`.

    `streams` are the RNG and data states from before an interrupted step (None when the
    interrupt came after the step's update, whose streams are already the right ones).
    """
    s.optimizer.zero_grad(set_to_none=True)
    if streams is not None:
        _set_streams(s, streams)
    if saved_at != state.step:
        save_checkpoint(s, state)
    raise RunInterrupted(f"interrupted; saved step {state.step} in {s.run_dir}; continue with "
                         f"`normlab train --resume {s.run_dir}`") from None


def run(cfg: RunConfig, run_dir: Path, *, resume: bool = False, overwrite: bool = False,
        on_step: StepCallback | None = None, runtime: Runtime | None = None) -> dict[str, Any]:
    """Train one model as `cfg` says, writing into `run_dir`; returns the summary dict.

    A fresh run refuses a `run_dir` that already holds a run (`rundir.claim_run_dir`) unless
    `overwrite`. With `resume=True` the run in `run_dir` must have the same config; its latest
    checkpoint (if any) is verified and continued, and a run that already finished (completed
    or diverged) is returned as is. `runtime` is the process's `Runtime` (started here if None).
    """
    run_dir = Path(run_dir)
    rt = runtime or Runtime.start(cfg)
    summary_path = run_dir / "summary.json"
    if rt.dist.is_main or not overwrite:  # every rank checks, so all refuse together
        claim_run_dir(run_dir, cfg, resume=resume, overwrite=overwrite)
    D.barrier(rt.dist)
    if resume and summary_path.is_file():
        saved = json.loads(summary_path.read_text())
        if saved.get("status") in FINISHED:
            return saved
    latest = checkpoint.latest(run_dir) if resume else None
    s = prepare(cfg, rt, run_dir, fresh=latest is None)
    state = restore(s, latest) if latest is not None else LoopState()
    if rt.dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        record_run(run_dir, cfg)
        summary_path.unlink(missing_ok=True)
        write_metrics(s.metrics_path, state.records)
        s.probe.reset(state.step)
    if rt.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(rt.device)
    t_run = time.perf_counter()
    status = _loop(s, state, on_step)
    summary = _summary(s, state, status, time.perf_counter() - t_run)
    if rt.dist.is_main:
        write_atomic(summary_path, json.dumps(summary, indent=2) + "\n")
    D.barrier(rt.dist)
    return summary
