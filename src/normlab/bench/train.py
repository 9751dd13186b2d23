"""One training run: AdamW + warmup/cosine, clipping, AGC, autocast, eval, checkpoints.

    summary = run(cfg, Path("runs/x"))                 # fresh run
    summary = run(cfg, Path("runs/x"), resume=True)    # continue from the latest checkpoint

The same function runs under `torchrun --nproc_per_node N` (DDP, or FSDP2 with
`train.parallel=fsdp`): each rank draws its own batches, the loss is averaged over ranks, and
only rank 0 writes config.json, metrics.jsonl, summary.json and checkpoints.

metrics.jsonl holds one JSON object per line: `{"kind": "train", "step", "loss", "lr",
"grad_norm", "tokens_per_s", "mem_bytes", "time_s"}` every `train.log_every` steps and
`{"kind": "eval", "step", "val_loss"[, "val_acc"]}` every `train.eval_every` steps and at the end.
`step` counts optimizer steps done. A run stops early, marked diverged, when the training loss
is NaN/Inf or spikes (`diverged`). With
`train.diagnose_every` > 0, rank 0 also appends the cheap diagnostics of the training step to
diagnostics.jsonl every that many steps and at the last one (bench/diagnostics.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from normlab.bench import checkpoint
from normlab.bench import distributed as D
from normlab.bench.config import RunConfig
from normlab.bench.data import DigitsData, load_data
from normlab.bench.diagnostics import FILE, TrainingDiagnostics
from normlab.bench.metrics import read_metrics, summarize, write_atomic, write_metrics
from normlab.bench.optim import (
    classifier_parameters,
    clip_gradients_,
    gpas_gate_parameters,
    learning_rate,
    make_adamw,
)

StepCallback = Callable[[int, dict[str, Any]], None]


def build_model(cfg: RunConfig) -> nn.Module:
    """The GPT or ViT that `cfg` describes (norm and placement from the config)."""
    from normlab.models import GPT, GPTConfig, ViT, ViTConfig

    m = cfg.model
    common = dict(depth=m.depth, dim=m.dim, heads=m.heads, mlp_ratio=m.mlp_ratio,
                  norm=cfg.norm.name, norm_kwargs=dict(cfg.norm.kwargs),
                  placement=cfg.placement.name, placement_kwargs=dict(cfg.placement.kwargs),
                  dropout=m.dropout)
    if m.kind == "gpt":
        return GPT(GPTConfig(vocab_size=256, block_size=cfg.data.seq_len, bias=m.bias,
                             tie_embeddings=m.tie_embeddings, embed_gain_init=m.embed_gain_init,
                             **common))
    ignored = [name for name, value, default in (("bias", m.bias, True),
                                                 ("tie_embeddings", m.tie_embeddings, True),
                                                 ("embed_gain_init", m.embed_gain_init, None))
               if value != default]
    if ignored:
        warnings.warn(f"model.{', model.'.join(ignored)} apply to the GPT only; the ViT "
                      "ignores them", stacklevel=2)
    return ViT(ViTConfig(image_size=DigitsData.image_size, patch_size=m.patch_size,
                         channels=DigitsData.channels, num_classes=DigitsData.num_classes,
                         dual_patchnorm=m.dual_patchnorm, pool=m.pool, **common))


def resolve_device(name: str, d: D.Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but CUDA is not available; "
                             "use device=cpu or device=auto")
        return torch.device("cuda", d.local_rank if d.enabled else (device.index or 0))
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name == "fp16" and device.type != "cuda":
        raise ValueError("precision 'fp16' needs a CUDA device (it uses a loss scaler); use "
                         "bf16 or fp32 on CPU")
    return name


def _rss_bytes() -> int:
    """Current resident set size (Linux /proc), else the process's peak RSS."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return _rss_bytes()


def _data_seed(seed: int, rank: int) -> int:
    return int.from_bytes(hashlib.sha256(f"data/{seed}/{rank}".encode()).digest()[:8], "big") >> 1


def _replicated_params(model: nn.Module, cfg: RunConfig, d: D.Dist) -> list[nn.Parameter]:
    """Parameters that FSDP2 leaves whole on every rank: the 0-d ones (DyT's α, scalar gates),
    which `fully_shard` cannot shard; the loop averages their gradients over ranks itself."""
    if not (d.enabled and cfg.train.parallel == "fsdp"):
        return []
    return [p for p in model.parameters() if p.dim() == 0]


def _wrap(model: nn.Module, cfg: RunConfig, d: D.Dist, device: torch.device,
          replicated: list[nn.Parameter]) -> nn.Module:
    """The module the loop calls: plain, DDP, or FSDP2-sharded in place."""
    if not d.enabled:
        return model
    if cfg.train.parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        ignored = set(replicated)
        for block in getattr(model, "blocks", []):
            fully_shard(block, ignored_params=ignored)
        return fully_shard(model, ignored_params=ignored)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                   else None)


def _state_dicts(model: nn.Module, optimizer, cfg: RunConfig, d: D.Dist):
    if d.enabled and cfg.train.parallel == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        return get_state_dict(model, optimizer,
                              options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return model.state_dict(), optimizer.state_dict()


def _load_state_dicts(model: nn.Module, optimizer, ckpt: checkpoint.Checkpoint, cfg: RunConfig,
                      d: D.Dist) -> None:
    if d.enabled and cfg.train.parallel == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(model, optimizer, model_state_dict=ckpt.model,
                       optim_state_dict=ckpt.optimizer,
                       options=StateDictOptions(full_state_dict=True))
        return
    model.load_state_dict(ckpt.model)
    optimizer.load_state_dict(ckpt.optimizer)


@torch.no_grad()
def evaluate(model: nn.Module, data, cfg: RunConfig, device: torch.device, autocast,
             d: D.Dist) -> dict[str, float]:
    """Mean validation loss (and accuracy for images) over the fixed validation batches."""
    was_training = model.training
    model.eval()
    loss_sum = correct = count = 0.0
    for inputs, targets in data.val_batches(cfg.train.eval_batches, d.rank, d.world):
        inputs, targets = inputs.to(device), targets.to(device)
        with autocast():
            logits, loss = model(inputs, targets)
        n = targets.numel()
        loss_sum += loss.float().item() * n
        correct += (logits.argmax(-1) == targets).sum().item()
        count += n
    model.train(was_training)
    loss_sum, correct, count = D.all_sum([loss_sum, correct, count], d)
    result = {"val_loss": loss_sum / count}
    if isinstance(data, DigitsData):
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


def run(cfg: RunConfig, run_dir: Path, *, resume: bool = False,
        on_step: StepCallback | None = None) -> dict[str, Any]:
    """Train one model as `cfg` says, writing into `run_dir`; returns the summary dict.

    With `resume=True` the latest checkpoint in `run_dir` (if any) is verified and continued;
    a run that already finished is returned as is.
    """
    run_dir = Path(run_dir)
    d = D.setup(use_cuda=resolve_device(cfg.device, D.Dist()).type == "cuda")
    device = resolve_device(cfg.device, d)
    precision = resolve_precision(cfg.precision, device)
    summary_path, metrics_path = run_dir / "summary.json", run_dir / "metrics.jsonl"
    if resume and summary_path.is_file():
        return json.loads(summary_path.read_text())

    torch.manual_seed(cfg.train.seed)
    data = load_data(cfg.data)
    model = build_model(cfg).to(device)
    num_params = sum(p.numel() for p in model.parameters())
    if d.enabled and cfg.train.parallel == "fsdp" and cfg.optim.agc is not None:
        raise ValueError("optim.agc needs whole rows and vectors on each rank, but "
                         "train.parallel=fsdp shards them; use train.parallel=ddp or "
                         "optim.agc=null")
    replicated = _replicated_params(model, cfg, d)
    wrapped = _wrap(model, cfg, d, device, replicated)
    optimizer = make_adamw(model, cfg.optim)  # after fully_shard, which swaps in DTensor params
    head = classifier_parameters(model) if cfg.optim.agc is not None else set()
    gate_params = gpas_gate_parameters(model) if cfg.optim.gate_clip else []
    probe = TrainingDiagnostics(model, cfg.train, run_dir / FILE, write=d.is_main)
    agc_params = [p for p in model.parameters() if id(p) not in head]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    generator = torch.Generator().manual_seed(_data_seed(cfg.train.seed, d.rank))
    if isinstance(data, DigitsData):
        tokens_per_step = cfg.data.batch_size * (data.image_size // cfg.model.patch_size) ** 2
    else:
        tokens_per_step = cfg.data.batch_size * cfg.data.seq_len
    tokens_per_step *= d.world

    start, running_min, initial_loss, records = 0, math.inf, math.nan, []
    config = cfg.to_dict()
    ckpt_path = checkpoint.latest(run_dir) if resume else None
    if ckpt_path is not None:
        # FSDP's DTensors report their global shapes, so every rank can check the manifest
        ckpt = checkpoint.load(ckpt_path, config=config, expected=model.state_dict())
        if ckpt.loop["world"] != d.world:
            raise ValueError(f"checkpoint {ckpt_path} was written by {ckpt.loop['world']} "
                             f"processes; resume it with --nproc_per_node {ckpt.loop['world']}")
        _load_state_dicts(model, optimizer, ckpt, cfg, d)
        torch.set_rng_state(ckpt.tensors[f"rng.cpu.{d.rank}"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(ckpt.tensors[f"rng.cuda.{d.rank}"], device)
        generator.set_state(ckpt.tensors[f"data.generator.{d.rank}"])
        if scaler is not None:
            scaler.load_state_dict(ckpt.loop["scaler"])
        start, running_min = ckpt.step, ckpt.loop["running_min"]
        initial_loss = ckpt.loop.get("initial_loss", math.nan)
        records = [r for r in read_metrics(metrics_path) if r["step"] <= start]
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(cfg.to_json() + "\n")
        write_metrics(metrics_path, records)
        probe.reset(start)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def log(record: dict[str, Any]) -> None:
        records.append(record)
        if d.is_main:
            with metrics_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")

    def save(step: int) -> None:
        model_state, optim_state = _state_dicts(model, optimizer, cfg, d)
        tensors = {}
        states = {"rng.cpu": torch.get_rng_state(), "data.generator": generator.get_state()}
        if device.type == "cuda":
            states["rng.cuda"] = torch.cuda.get_rng_state(device)
        for name, state in states.items():
            for rank, part in enumerate(D.gather_states(state, d)):
                tensors[f"{name}.{rank}"] = part
        loop = {"running_min": running_min, "initial_loss": initial_loss, "world": d.world,
                "scaler": scaler.state_dict() if scaler is not None else None}
        if d.is_main:
            checkpoint.save(run_dir, step, model=model_state, optimizer=optim_state,
                            tensors=tensors, loop=loop, config=config,
                            keep=cfg.train.keep_checkpoints)
        D.barrier(d)

    status = "completed"
    wrapped.train()
    t_run = time.perf_counter()
    for step in range(start, cfg.train.steps):
        t0 = time.perf_counter()
        done = step + 1
        lr = learning_rate(step, cfg.train.steps, cfg.optim.lr, cfg.schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = data.train_batch(generator)
        inputs, targets = inputs.to(device), targets.to(device)
        with probe.watch(done):
            with autocast():
                _, loss = wrapped(inputs, targets)
            (scaler.scale(loss) if scaler is not None else loss).backward()
        D.average_gradients_(replicated, d)
        (loss_value,) = D.all_sum([loss.detach().float().item() / d.world], d)
        if math.isnan(initial_loss):
            initial_loss = loss_value
        if diverged(loss_value, running_min, initial_loss, cfg.train.spike_threshold):
            status = "diverged"
            log({"kind": "diverged", "step": step + 1, "loss": loss_value,
                 "running_min": running_min, "initial_loss": initial_loss})
            break
        running_min = min(running_min, loss_value)
        if scaler is not None:
            scaler.unscale_(optimizer)
        probe.record(done, scaler.get_scale() if scaler is not None else 1.0)
        grad_norm = clip_gradients_(cfg.optim, list(model.parameters()),
                                    agc_params=agc_params, gate_params=gate_params)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - t0
        record = {"kind": "train", "step": done, "loss": loss_value, "lr": lr,
                  "grad_norm": float(grad_norm), "tokens_per_s": tokens_per_step / elapsed,
                  "mem_bytes": _memory(device), "time_s": time.perf_counter() - t_run}
        if done % cfg.train.log_every == 0 or done == cfg.train.steps:
            log(record)
        if done % cfg.train.eval_every == 0 or done == cfg.train.steps:
            log({"kind": "eval", "step": done,
                 **evaluate(wrapped, data, cfg, device, autocast, d)})
        if done % cfg.train.checkpoint_every == 0 or done == cfg.train.steps:
            save(done)
        if on_step is not None and d.is_main:
            on_step(done, record)

    summary = {"status": status, **summarize(records), "norm": cfg.norm.name,
               "placement": cfg.placement.name, "seed": cfg.train.seed, "params": num_params,
               "world_size": d.world, "device": str(device), "precision": precision,
               "wall_s": time.perf_counter() - t_run}
    if d.is_main:
        write_atomic(summary_path, json.dumps(summary, indent=2) + "\n")
    D.barrier(d)
    return summary
