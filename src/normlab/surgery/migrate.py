"""migrate_scales: move a per-channel scale from a norm's output into the Linears that read it.

For a norm n(x) = γ⊙n̂(x) + β read by Linears W_k (all of them: q/k/v, or fc1 and the gate),
a positive per-channel s and a shift c give, exactly,

    γ' = γ / s,   β' = (β − c) / s,   W_k' = W_k·diag(s),   b_k' = b_k + W_k c

so that W_k'·n'(x) + b_k' = W_k·n(x) + b_k: the readers' input is divided by s channel by channel
(and centred by c), the weights absorb the inverse. The Linear side is the γ/β fold of
`fold.py` (`ports.fold_site` with scale s and shift c); the norm keeps its statistics. Two
choices of s, both computed from calibration batches (per channel j, over every token the first
reader sees):

- "smoothquant" (Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training Quantization
  for Large Language Models", ICML 2023; mit-han-lab/smoothquant `smooth.py`):
  s_j = max|X_j|^α / max_k,i |W_k[i, j]|^(1−α), both maxima clamped at 1e-5 and s at 1e-5,
  c = 0. α = 0.5 by default (the paper uses up to 0.85 for some LLMs). α → 1 moves all the
  activation range into the weights, α → 0 none of it.
- "repq" (Li et al., "RepQ-ViT: Scale Reparameterization for Post-Training Quantization of
  Vision Transformers", ICCV 2023; zkkli/RepQ-ViT): r_j = Δ_j / mean(Δ), Δ_j the per-channel
  quantization step, so that one per-tensor step fits every channel afterwards. Δ_j of an
  asymmetric min-max quantizer is (max_j − min_j)/(2^b − 1), hence r_j = range_j / mean(range)
  (the bit width cancels; the mean over the channels whose range is not 0, and r_j = 1 for a
  channel constant on the calibration batches). The paper's shift aligns the channels' zero
  points for an asymmetric quantizer; normlab's quantizers are symmetric, so the shift here
  centres every channel instead, c_j = (max_j + min_j)/2, after which each channel spans
  ±Δ̃(2^b − 1)/2.
  Without a β (RMSNorm), c = 0 and only the scale migrates (noted in the report). The official
  code picks each channel's range by a percentile search; here it is the calibration min-max.

Refused with the reason, before anything changes: a norm whose output is also the residual
stream or reaches a non-Linear consumer (Post-LN: dividing it by s would change the stream),
a norm without a per-channel γ parameter (no γ, a scalar gain) or whose γ is not an output
scale (`info.fold == "none"`), a batch-statistic norm in training mode. Sites no Linear reads
are left alone with a note; the final norm (read by the head, usually kept in floating point)
is migrated only when `where` selects it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from normlab.batches import call_model
from normlab.norms import Norm
from normlab.surgery.adapters import NormSite, Port, get_adapter
from normlab.surgery.hf_norms import identify
from normlab.surgery.ports import fold_site, get_module, set_param, untie
from normlab.surgery.report import Change, OutputProbe, Probe, Report
from normlab.surgery.select import Where, select
from normlab.surgery.translate import read_norm

Method = Literal["smoothquant", "repq"]
METHODS = ("smoothquant", "repq")
CLAMP = 1e-5  # SmoothQuant's floor for the maxima and the scales


def _gamma_offset(path: str, module: nn.Module) -> float:
    """The constant added to the stored `weight` to give γ (Gemma's 1 + w), or ValueError when
    the norm has no per-channel γ parameter to divide by s."""
    params = read_norm(module)
    if params is None:
        raise ValueError(f"migrate_scales: {path} ({type(module).__name__}) is not a norm "
                         f"surgery reads")
    weight = getattr(module, "weight", None)
    if not isinstance(weight, nn.Parameter) or tuple(weight.shape) != (params.dim,):
        raise ValueError(
            f"migrate_scales: {path} ({params.label}) has no per-channel γ parameter to absorb "
            f"1/s ({params.note or 'no affine weight'}); build it with an affine weight"
        )
    if isinstance(module, Norm):
        if module.info.fold == "none":
            raise ValueError(f"migrate_scales: {path} ({module.name}) declares info.fold='none': "
                             f"its γ does not scale its output channel by channel")
        if params.weight is not weight:
            raise ValueError(f"migrate_scales: {path} ({params.label}): γ is not its weight "
                             f"alone ({params.note}); cannot divide it by a per-channel s")
        if module.training and module.info.stats == "batch":
            raise ValueError(f"migrate_scales: {path} ({module.name}) uses batch statistics in "
                             f"training mode; call model.eval() first")
    hf = None if isinstance(module, Norm) else identify(module)
    return hf.offset if hf is not None else 0.0


@torch.no_grad()
def reader_ranges(model: nn.Module, sites: list[NormSite],
                  batches: Iterable[Any]) -> dict[str, tuple[Tensor, Tensor]]:
    """Per site, the per-channel (min, max) of its first reader's input over `batches` (float64,
    eval mode; the training flags are restored)."""
    ranges: dict[str, list[Tensor]] = {}

    def hook_for(path: str):
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            lo, hi = x.amin(0), x.amax(0)
            if path in ranges:
                lo, hi = torch.minimum(lo, ranges[path][0]), torch.maximum(hi, ranges[path][1])
            ranges[path] = [lo, hi]
        return hook

    flags = {name: m.training for name, m in model.named_modules()}
    handles = [get_module(model, s.readers[0].path).register_forward_pre_hook(hook_for(s.path))
               for s in sites]
    try:
        model.eval()
        for batch in batches:
            call_model(model, batch)
    finally:
        for handle in handles:
            handle.remove()
        for name, m in model.named_modules():
            m.training = flags.get(name, m.training)
    missing = [s.path for s in sites if s.path not in ranges]
    if missing:
        raise ValueError(f"migrate_scales: the calibration batches never reached the readers of "
                         f"{', '.join(missing)}")
    return {path: (lo, hi) for path, (lo, hi) in ranges.items()}


def weight_absmax(model: nn.Module, readers: Iterable[Port]) -> Tensor:
    """max_k,i |W_k[i, j]| per input channel j over every reader (float64)."""
    maxima = []
    for port in readers:
        w = get_module(model, port.path).weight.detach().double().abs()
        maxima.append(w.amax(0) if port.kind == "linear" else w.amax(1))  # conv1d: (in, out)
    return torch.stack(maxima).amax(0)


def smoothquant_scale(act_absmax: Tensor, w_absmax: Tensor, alpha: float) -> Tensor:
    """s_j = max|X_j|^α / max|W_j|^(1−α), maxima and s clamped at 1e-5 (SmoothQuant)."""
    s = act_absmax.clamp_min(CLAMP).pow(alpha) / w_absmax.clamp_min(CLAMP).pow(1 - alpha)
    return s.clamp_min(CLAMP)


def repq_scale(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """(r, c): r_j = range_j / mean(range), c_j = (max_j + min_j)/2 (module docstring).

    A channel constant on the calibration batches (range 0: a saturated DyT channel, say) has no
    step to match and keeps r_j = 1; so does every channel when all are constant.
    """
    span = hi - lo
    mean = span[span > 0].mean() if bool((span > 0).any()) else span.new_ones(())
    r = torch.where(span > 0, span / mean, torch.ones_like(span))
    return r.clamp_min(CLAMP), (hi + lo) / 2


def _untie_readers(model: nn.Module, layout: Any, adapter: Any, readers: set[str],
                   report: Report) -> None:
    for head, emb in layout.ties:
        if head.removesuffix(".weight") in readers:
            untie(model, head)
            adapter.untie(model)
            report.changes.append(Change(
                head.removesuffix(".weight"), f"tied to {emb}", "own weight",
                "untied: the head takes the migrated scale, the embedding does not"))


def migrate_scales(
    model: nn.Module,
    calibration: Iterable[Any] | None = None,
    *,
    method: Method = "smoothquant",
    alpha: float = 0.5,
    where: Where = None,
    probe: Probe = None,
) -> tuple[nn.Module, Report]:
    """Migrate per-channel scales from the selected norms into their readers (in place).

    Args:
        model: a model with a surgery adapter (HuggingFace gpt2/llama/vit/bert, normlab models).
        calibration: batches the model takes (a tensor, a tuple of positional arguments or a
            mapping of keywords); None = the adapter's random probe batch (noted).
        method: "smoothquant" or "repq" (module docstring).
        alpha: SmoothQuant's migration strength, in [0, 1].
        where: a norm selector; None = every norm site except the final one.
        probe: inputs for the output-error measurement; None = the adapter's random batch.
    """
    if method not in METHODS:
        raise ValueError(f"migrate_scales: method must be one of {METHODS}, got {method!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"migrate_scales: alpha must be in [0, 1], got {alpha!r}")
    adapter = get_adapter(model)
    layout = adapter.layout(model)
    candidates = [s.path for s in layout.norms if where is not None or s.role != "final"]
    chosen = set(select(model, where, candidates, "migrate_scales"))
    sites = [s for s in layout.norms if s.path in chosen]
    report = Report("migrate_scales", layout.arch, exact=True)
    plans = []
    for site in sites:
        if site.role == "post":
            raise ValueError(
                f"migrate_scales: {site.path}'s output also feeds the residual stream or a "
                f"non-Linear consumer ({site.why or 'its output is the residual stream'}); "
                f"dividing it by s would change more than its readers, so the migration would "
                f"not be exact; refusing before changing anything"
            )
        if not site.readers:
            report.notes.append(f"{site.path}: kept, no Linear reads it")
            continue
        plans.append((site, get_module(model, site.path)))
    offsets = [_gamma_offset(site.path, module) for site, module in plans]
    probe_ = OutputProbe(model, adapter, probe)
    if calibration is None:
        calibration = [adapter.probe_inputs(model, torch.Generator().manual_seed(1))]
        report.notes.append("calibrated on one random probe batch (pass calibration= batches)")
    ranges = reader_ranges(model, [site for site, _ in plans], calibration)
    readers = {p.path for site, _ in plans for p in site.readers}
    with torch.no_grad():
        _untie_readers(model, layout, adapter, readers, report)
        for (site, module), offset in zip(plans, offsets, strict=True):
            lo, hi = ranges[site.path]
            params = read_norm(module)
            if method == "smoothquant":
                absmax = torch.maximum(lo.abs(), hi.abs())
                s = smoothquant_scale(absmax, weight_absmax(model, site.readers), alpha)
                centre = None
                how = f"SmoothQuant α={alpha:g}"
            else:
                s, centre = repq_scale(lo, hi)
                how = "RepQ-ViT r = range/mean(range)"
                if params.bias is None:
                    centre = None
                    report.notes.append(f"{site.path}: no β, so only the scale migrates (no "
                                        f"centring shift)")
            assert bool(torch.isfinite(s).all() and (s > 0).all()), f"bad scales at {site.path}"
            shift = None if centre is None else centre / site.input_scale  # norm units
            gamma = module.weight.detach().double() + offset
            set_param(module, "weight", gamma / s.to(gamma.device) - offset)
            if params.bias is not None:
                beta = params.bias.detach().double()
                if shift is not None:
                    beta = beta - shift.to(beta.device)
                set_param(module, "bias", beta / s.to(beta.device))
            report.changes += fold_site(model, site, s, shift)
            detail = f"{how}: γ ← γ/s, s ∈ [{s.min().item():.3g}, {s.max().item():.3g}]"
            if shift is not None:
                detail += "; β ← (β − c)/s, c = channel centre"
            report.changes.append(Change(site.path, params.label, params.label, detail))
    return model, probe_.measure(model, report)
