"""fold_norms: move norm affines (and, in eval mode, whole batch-statistic norms) into Linears.

Two folds, both exact (methods.md, "Summary table"):

- γ-fold, for token and elementwise norms (LayerNorm, RMSNorm, HuggingFace RMSNorms, normlab
  norms with `info.fold == "affine"`): each reader Linear absorbs the affine,
  W' = W·diag(γ), b' = b + Wβ, and the norm keeps its statistics with the affine removed.
- op-fold, for norms whose `info.fold == "op"` (normlab's batchnorm, unifiednorm, repbn,
  prepbn, identity): in eval mode the norm is y = a⊙x + b (`eval_affine()`), so the readers
  absorb (a, b) the same way and the norm is replaced by `Folded` (an nn.Identity that also
  accepts the norm's mask). The model must be in eval mode: in training these norms use batch
  statistics, which no weight can hold.

A norm whose output is the residual stream (Post-LN) or reaches a non-Linear consumer is
refused; a norm no Linear reads (the output of a model without a head) is kept with a note.
"""

from __future__ import annotations

import torch
from torch import nn

from normlab.norms import Norm
from normlab.surgery.adapters import get_adapter
from normlab.surgery.ports import describe, fold_into_reader, get_module, set_module, untie
from normlab.surgery.report import Change, OutputProbe, Probe, Report
from normlab.surgery.select import Where, select
from normlab.surgery.translate import Folded, module_label, read_norm, statistics_only


def _mode(path: str, module: nn.Module) -> str:
    """"op", "affine", or why nothing folds."""
    params = read_norm(module)
    if params is None:
        raise ValueError(
            f"fold_norms: {path} ({type(module).__name__}) is not a norm surgery reads"
        )
    if isinstance(module, Norm) and module.info.fold == "op":
        if module.training:
            raise ValueError(
                f"fold_norms: {path} ({module.name}) uses batch statistics in training mode; "
                f"call model.eval() first so that it is the fixed affine map of its running "
                f"statistics"
            )
        return "op"
    if isinstance(module, Norm) and module.info.fold == "none":
        return f"kept: {module.name} has nothing that folds exactly (info.fold='none')"
    if not params.per_channel:
        return f"kept: {params.note}"
    if params.weight is None and params.bias is None:
        return "kept: no affine to fold"
    return "affine"


def fold_norms(
    model: nn.Module, where: Where = None, *, probe: Probe = None
) -> tuple[nn.Module, Report]:
    """Fold the selected norms of `model` (in place) into the Linears that read them.

    Args:
        model: a model with an adapter (HuggingFace gpt2/llama/vit, normlab GPT/ViT).
        where: a type, a name glob or a predicate (name, module) -> bool; None = every norm.
        probe: inputs for the error measurement; None = random inputs from the adapter.

    Raises ValueError, before changing anything, when a selected norm feeds the residual stream
    (Post-LN) or a non-Linear consumer, or when a batch-statistic norm is in training mode.
    """
    adapter = get_adapter(model)
    layout = adapter.layout(model)
    chosen = set(select(model, where, [s.path for s in layout.norms], "fold_norms"))
    plans = []
    for site in layout.norms:
        if site.path not in chosen:
            continue
        if site.role == "post":
            raise ValueError(
                f"fold_norms: {site.path} feeds the residual stream (Post-LN) or a non-Linear "
                f"consumer ({site.why or 'its output is the residual stream'}), so its affine "
                f"has no Linear to move into; refusing before changing anything"
            )
        module = get_module(model, site.path)
        mode = _mode(site.path, module)
        if mode in ("op", "affine") and not site.readers:
            mode = "kept: no Linear reads it (its output is the model output)"
        plans.append((site, module, mode))
    probe_ = OutputProbe(model, adapter, probe)
    report = Report("fold_norms", layout.arch, exact=True)
    folding = {p.path for site, _, mode in plans if mode in ("op", "affine") for p in site.readers}
    with torch.no_grad():
        for head, emb in layout.ties:
            if head.removesuffix(".weight") in folding:
                untie(model, head)
                adapter.untie(model)
                report.changes.append(Change(
                    head.removesuffix(".weight"), f"tied to {emb}", "own weight",
                    "untied: the head takes the final norm's affine, the embedding does not",
                ))
        for site, module, mode in plans:
            if mode not in ("op", "affine"):
                report.notes.append(f"{site.path}: {mode}")
                continue
            params = read_norm(module)
            if mode == "op":
                scale, shift = module.eval_affine()
                new, spec = Folded(), {"type": "identity"}
                detail = "eval-mode affine (eval_affine) folded; norm removed"
            else:
                scale, shift = params.weight, params.bias
                new, spec = statistics_only(params)
                detail = "γ/β folded; statistics kept, affine removed"
            if shift is not None:
                shift = shift * site.input_scale  # readers see s·(γn + β) = γ(s·n) + s·β
            for port in site.readers:
                old = describe(model, port)
                what = fold_into_reader(model, port, scale, shift)
                report.changes.append(Change(port.path, old, describe(model, port), what))
            if new is not module:
                set_module(model, site.path, new)
            report.changes.append(Change(site.path, params.label, module_label(new), detail, spec))
    return model, probe_.measure(model, report)
