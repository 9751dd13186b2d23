"""The `Report` every surgery call returns, and the probe that measures the output error.

The probe runs the model on one batch (random token ids or pixels from the adapter, or the
inputs given) before and after the edit and compares its output (logits, else the last hidden
state of a ModelOutput: `adapters.traced.model_output`), in eval mode (dropout off, running
statistics) and without gradients; the training flags of the surviving modules are restored
afterwards.

    max_abs_error = max |y' − y|
    max_rel_error = max |y' − y| / max |y|      (relative to the largest reference magnitude, so
                                                 logits near zero do not blow the ratio up)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from normlab.surgery.adapters.base import Adapter
from normlab.surgery.adapters.traced import model_output

Probe = Tensor | dict[str, Any] | None


@dataclass
class Change:
    """One site: its module path, the module before and after, and what was moved or dropped."""

    path: str
    old: str
    new: str
    detail: str = ""
    spec: dict[str, Any] | None = None  # how to rebuild the new module (for save_converted)


@dataclass
class Report:
    """What a surgery call did and how far the outputs moved.

    `exact` is the claim (the operation is an identity in exact arithmetic); the measured
    errors are the evidence. NaN errors mean no probe could be run (a model without an adapter
    and no `probe=` inputs).
    """

    operation: str
    arch: str
    exact: bool
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    max_abs_error: float = math.nan
    max_rel_error: float = math.nan
    output: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        claim = "exact" if self.exact else "approximate"
        lines = [f"{self.operation} on {self.arch}: {len(self.changes)} site(s) changed ({claim})"]
        for c in self.changes:
            lines.append(f"  {c.path}: {c.old} → {c.new}" + (f"  [{c.detail}]" if c.detail else ""))
        lines += [f"  note: {n}" for n in self.notes]
        lines.append(
            f"  {self.output or 'output'}: max abs error {self.max_abs_error:.3g}, "
            f"max rel error {self.max_rel_error:.3g}"
        )
        return "\n".join(lines)


class OutputProbe:
    """Runs the model on fixed inputs and compares outputs before/after an edit."""

    def __init__(self, model: nn.Module, adapter: Adapter | None, probe: Probe, seed: int = 0):
        self.adapter = adapter
        if probe is None and adapter is not None:
            probe = adapter.probe_inputs(model, torch.Generator().manual_seed(seed))
        self.inputs = probe
        self.reference = self.run(model) if probe is not None else None

    def run(self, model: nn.Module) -> Tensor:
        flags = {name: m.training for name, m in model.named_modules()}
        model.eval()
        try:
            with torch.no_grad():
                if self.adapter is not None:
                    out = self.adapter.output(model, self.inputs)
                elif isinstance(self.inputs, dict):
                    out = model_output(model(**self.inputs))
                else:
                    out = model_output(model(self.inputs))
        finally:
            root = flags.get("", True)
            for name, m in model.named_modules():
                m.training = flags.get(name, root)
        return out

    def measure(self, model: nn.Module, report: Report) -> Report:
        """Fill `report`'s errors by running the edited model on the same inputs."""
        if self.reference is None:
            report.notes.append("no probe inputs: the output error was not measured")
            return report
        after = self.run(model).double()
        before = self.reference.double()
        if after.shape != before.shape:
            raise AssertionError(f"output shape changed: {tuple(before.shape)} → {after.shape}")
        diff = (after - before).abs().max().item()
        report.max_abs_error = diff
        scale = max(before.abs().max().item(), torch.finfo(torch.float64).tiny)
        report.max_rel_error = diff / scale
        report.output = f"output {tuple(before.shape)}"
        return report
