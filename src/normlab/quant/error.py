"""The error fake quantization causes: per Linear (local) and at the model output (overall).

    report = quant_error(model, QuantSpec(4, 8), batches, score=loss_of)
    print(report)     # per layer: relative output error; overall: output error, cosine, score

Per site (one pass of the floating-point model, forward hooks): each selected Linear's output
on its own floating-point input, y = xWᵀ + b, against the same layer quantized,
ŷ = Q_a(x) Q_w(W)ᵀ + b; summed over every token of every batch,

    rel_error = ‖ŷ − y‖ / ‖y‖          (sqnr_db = −20·log10 rel_error)

so the number isolates the layer: it does not include the errors of the layers before it.

Overall (the whole model quantized, `fake_quantized`): on the tensor `output(model, batch)`
returns (default: the logits or last hidden state), summed over batches,

    output_rel_error = ‖o_q − o‖ / ‖o‖,  output_cosine = mean over rows of cos(o_q, o)

and, when `score(model, batch) -> float` is given (a loss, an accuracy), its mean over batches
in floating point and quantized, with the standard error of the mean of the per-batch change
(`score_delta_se`: std over batches / √batches; None for one batch), the batch-sampling
noise of the paired difference. Runs in eval mode without gradients; the model's training
flags are restored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from normlab.batches import Batch, call_model
from normlab.diagnostics.recorder import main_output
from normlab.quant.apply import (
    fake_quantized,
    linear_forward,
    quantizable,
    quantized_input,
    quantized_weight,
)
from normlab.quant.fake import QuantSpec
from normlab.selection import Where

OutputFn = Callable[[nn.Module, Batch], Tensor]
ScoreFn = Callable[[nn.Module, Batch], float]


def default_output(model: nn.Module, batch: Batch) -> Tensor:
    """The model's main output tensor: `logits` or `last_hidden_state` of a mapping output
    (HuggingFace), else the first tensor (normlab's (logits, loss) pair)."""
    result = call_model(model, batch)
    if isinstance(result, Mapping):
        for key in ("logits", "last_hidden_state"):
            if isinstance(result.get(key), Tensor):
                return result[key]
    out = main_output(result)
    if out is None:
        raise ValueError(f"{type(model).__name__} returned no tensor; pass output=(model, batch) "
                         "-> Tensor")
    return out


@dataclass
class SiteError:
    """One Linear: its relative output error under quantization on floating-point inputs."""

    path: str
    rel_error: float

    @property
    def sqnr_db(self) -> float:
        return -20 * math.log10(self.rel_error) if self.rel_error > 0 else math.inf


@dataclass
class QuantReport:
    """The per-site and overall error of one `QuantSpec` on some batches."""

    spec: str
    batches: int
    sites: list[SiteError] = field(default_factory=list)
    output_rel_error: float = math.nan
    output_cosine: float = math.nan
    score_fp: float | None = None
    score_quant: float | None = None
    score_delta_se: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def worst(self, k: int = 5) -> list[SiteError]:
        return sorted(self.sites, key=lambda s: -s.rel_error)[:k]

    def __str__(self) -> str:
        lines = [f"{self.spec} on {self.batches} batch(es): output rel error "
                 f"{self.output_rel_error:.3g}, cosine {self.output_cosine:.6f}"]
        if self.score_fp is not None:
            se = "" if self.score_delta_se is None else f", change ± {self.score_delta_se:.2g} (SE)"
            lines.append(f"  score: {self.score_fp:.5g} (float) → {self.score_quant:.5g} "
                         f"(quantized{se})")
        for s in self.sites:
            lines.append(f"  {s.path}: rel error {s.rel_error:.3g} ({s.sqnr_db:.1f} dB)")
        return "\n".join(lines)


class _Restore:
    """Eval mode and no gradients inside; the training flags put back on exit."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.flags = {name: m.training for name, m in model.named_modules()}
        self.grad = torch.no_grad()

    def __enter__(self) -> None:
        self.model.eval()
        self.grad.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.grad.__exit__(*exc)
        for name, m in self.model.named_modules():
            m.training = self.flags.get(name, m.training)


def site_errors(model: nn.Module, spec: QuantSpec, batches: Iterable[Batch],
                where: Where = None) -> list[SiteError]:
    """The per-Linear relative error (module docstring), in model order."""
    layers = quantizable(model, where)
    sums = {name: [0.0, 0.0] for name, _ in layers}  # ‖ŷ − y‖², ‖y‖²
    weights = {name: quantized_weight(m, spec) for name, m in layers}

    def hook_for(name: str):
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            approx = linear_forward(module, quantized_input(args[0], spec), weights[name])
            exact = output.double()
            sums[name][0] += (approx.double() - exact).square().sum().item()
            sums[name][1] += exact.square().sum().item()
        return hook

    handles = [m.register_forward_hook(hook_for(name)) for name, m in layers]
    try:
        with _Restore(model):
            for batch in batches:
                call_model(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    return [SiteError(name, math.sqrt(e / y) if y > 0 else math.nan)
            for name, (e, y) in sums.items()]


def quant_error(
    model: nn.Module,
    spec: QuantSpec,
    batches: Sequence[Batch],
    *,
    where: Where = None,
    output: OutputFn = default_output,
    score: ScoreFn | None = None,
    per_site: bool = True,
) -> QuantReport:
    """Measure `spec` on `model` over `batches` (module docstring); the model is unchanged."""
    if not batches:
        raise ValueError("quant_error needs at least one batch")
    report = QuantReport(spec.label, len(batches))
    if per_site:
        report.sites = site_errors(model, spec, batches, where)
    err = ref = 0.0
    cosines: list[Tensor] = []
    scores_fp: list[float] = []
    scores_q: list[float] = []
    with _Restore(model):
        for batch in batches:
            exact = output(model, batch).double()
            if score is not None:
                scores_fp.append(float(score(model, batch)))
            with fake_quantized(model, spec, where):
                approx = output(model, batch).double()
                if score is not None:
                    scores_q.append(float(score(model, batch)))
            err += (approx - exact).square().sum().item()
            ref += exact.square().sum().item()
            cosines.append(torch.nn.functional.cosine_similarity(
                approx.reshape(-1, approx.shape[-1]), exact.reshape(-1, exact.shape[-1]), dim=-1))
    report.output_rel_error = math.sqrt(err / ref) if ref > 0 else math.nan
    report.output_cosine = torch.cat(cosines).mean().item()
    if score is not None:
        report.score_fp = sum(scores_fp) / len(scores_fp)
        report.score_quant = sum(scores_q) / len(scores_q)
        if len(batches) > 1:
            deltas = torch.tensor(scores_q, dtype=torch.float64) - torch.tensor(scores_fp,
                                                                              dtype=torch.float64)
            report.score_delta_se = (deltas.std() / math.sqrt(len(deltas))).item()
    return report
