"""Cheap diagnostics during training, every `train.diagnose_every` steps and at the last one.

    probe = TrainingDiagnostics(model, cfg.train, run_dir / FILE, write=d.is_main)
    probe.reset(start)                 # keep the recordings of steps <= start (a resume)
    with probe.watch(done):            # around the step's forward and backward
        loss = ...; loss.backward()
    probe.record(done, loss_scale, lr) # after the backward (and unscaling), before any clipping

At a recording step, `normlab.diagnostics.Recorder` watches that step's own forward and
backward on the training batch: no extra pass, and its hooks only copy, so the losses are the
same as with the diagnostics off. The parameter-gradient norm of each block is read from the
step's gradients (after DDP's all-reduce, FSDP's reduce-scatter and the loss scaler's
unscaling; before AGC and clipping), on every rank because FSDP needs a collective for it.
Everything else is measured on rank 0's batch, and only the writing rank appends one JSON
line to diagnostics.jsonl:

    {"step": 40,
     "blocks": [{"index", "name", "input", "output", "angular_distance",
                 "grad": {"params", "output_token_norm", "output_rms"}}, ...],
     "norms": [{"name", "kind", "stats", "block", "input", "output", "dyt", "batch_stats"}, ...],
     "weights": [{"name", "norm", "effective_lr", "scale_invariant"}, ...]}

The fields are those of the diagnostics JSON (docs/diagnostics.md), computed over one step.
`step` is the optimizer step whose forward was measured, as in metrics.jsonl (the parameters
before that step's update). The skip-a-block losses, outliers and S-curves are left out: the
first costs a forward per block and the others are for `normlab diagnose`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torch import nn
from torch.distributed.tensor import DTensor

from normlab.bench.config import TrainConfig
from normlab.bench.metrics import read_metrics, write_metrics
from normlab.diagnostics import Recorder, Recording, select_blocks, summarize
from normlab.diagnostics.effective_lr import effective_learning_rates

FILE = "diagnostics.jsonl"
BLOCKS = "blocks.*"  # normlab's GPT and ViT; a glob, so that a single block is found too
MAX_TOKENS = 1024  # token rows kept per activation: enough for a variance, cheap to copy
BLOCK_FIELDS = ("index", "name", "input", "output", "angular_distance", "grad",
                "max_attention_logit")
NORM_FIELDS = ("name", "kind", "stats", "block", "input", "output", "dyt", "batch_stats")


def due(done: int, train: TrainConfig) -> bool:
    """Whether optimizer step `done` (1-based) is recorded."""
    every = train.diagnose_every
    return every > 0 and (done % every == 0 or done == train.steps)


def block_grad_norm(block: nn.Module) -> float | None:
    """‖∂L/∂θ‖₂ over the block's parameters' current `.grad` (None when none has one)."""
    grads = [p.grad for p in block.parameters() if p.grad is not None]
    if not grads:
        return None
    norm = nn.utils.get_total_norm(grads)
    if isinstance(norm, DTensor):  # FSDP shards: the reduction over ranks is a collective
        norm = norm.full_tensor()
    return float(norm)


class TrainingDiagnostics:
    """The diagnostics of one training run (see the module docstring).

    Args:
        model: the unwrapped model (DDP's `.module`; FSDP2 shards it in place).
        train: its `TrainConfig` (`diagnose_every`, `steps`).
        path: the run's diagnostics.jsonl.
        write: this rank records activations and writes the file (rank 0).
    """

    def __init__(self, model: nn.Module, train: TrainConfig, path: Path, *, write: bool) -> None:
        self.model, self.train, self.path, self.write = model, train, Path(path), write
        # found up front, so that a model without blocks fails before training starts
        self.blocks = select_blocks(model, BLOCKS) if train.diagnose_every else []
        self._recording: Recording | None = None

    def reset(self, start: int) -> None:
        """Cut diagnostics.jsonl back to the recordings of steps <= `start`."""
        if self.write and self.train.diagnose_every:
            write_metrics(self.path, [r for r in read_metrics(self.path) if r["step"] <= start])

    @contextmanager
    def watch(self, done: int) -> Iterator[None]:
        """Hooks on the model for the body (forward and backward) when step `done` is due."""
        if not (self.write and due(done, self.train)):
            yield
            return
        with Recorder(self.model, blocks=BLOCKS, max_tokens=MAX_TOKENS) as recorder:
            yield
        self._recording = recorder.recording

    def record(self, done: int, loss_scale: float = 1.0, lr: float | None = None) -> None:
        """Append the record of step `done` if due; every rank must call it (FSDP).

        `loss_scale` is the fp16 loss scaler's factor, which the activation gradients carry;
        `lr` the step's learning rate (None: no `weights` entry).
        """
        if not due(done, self.train):
            return
        grad_norms = [block_grad_norm(block) for _, block in self.blocks]
        weights = effective_learning_rates(self.model, lr) if lr else None
        if not self.write:
            return
        doc = summarize(self._recording, top_k=1, curve_channels=1, curve_points=1)
        blocks = [{k: entry[k] for k in BLOCK_FIELDS} for entry in doc["blocks"]]
        for entry, norm in zip(blocks, grad_norms, strict=True):
            grad = entry["grad"]
            for key in ("output_token_norm", "output_rms"):
                if grad[key] is not None:
                    grad[key] /= loss_scale
            grad["params"] = norm
        norms = [{k: entry[k] for k in NORM_FIELDS} for entry in doc["norms"]]
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": done, "blocks": blocks, "norms": norms,
                                     "weights": weights}) + "\n")
        self._recording = None

