"""fold_norms: move norm affines (and, in eval mode, whole batch-statistic norms) into Linears.

Two folds, both exact. The γ/β fold is the first step of the Pre-LN → Pre-RMSNorm conversion of
Jiang, Gu, Zhu, Pan, "Pre-RMSNorm and Pre-CRMSNorm Transformers: Equivalent and Efficient Pre-LN
Transformers" (NeurIPS 2023); the op-fold is the classic folding of an inference-mode BatchNorm
into the adjacent Linear.

- γ-fold, for torch/HuggingFace LayerNorm and RMSNorm and normlab norms with
  `info.fold == "affine"` (`norms_that_fold("affine")`): each reader Linear absorbs the affine,
  W' = W·diag(γ), b' = b + Wβ, and the norm keeps its statistics with the affine removed. A
  normlab norm's affine is whatever its affine=False form drops (translate.py), so a scalar gain
  (ScaleNorm's g) folds as γ = g/√D expanded to every channel, √D being the constant gain that
  ScaleNorm keeps without affine.
- op-fold, for norms with `info.fold == "op"` (`norms_that_fold("op")`): in eval mode the norm is
  y = a⊙x + b (`eval_affine()`), so the readers absorb (a, b) the same way and the norm is
  replaced by `Folded` (an nn.Identity that also accepts the norm's mask). The model must be in
  eval mode: in training these norms use batch statistics, which no weight can hold.
- norms with `info.fold == "none"` are kept, with a note in the report.

A reader sees s·N(x) when the block scales the norm output by a constant s (LNS's 1/√ℓ): the
block keeps applying s, so γ folds as is and β as s·β.

A norm whose output is the residual stream (Post-LN) or reaches a non-Linear consumer is
refused; a norm no Linear reads (the output of a model without a head) is kept with a note.
"""

from __future__ import annotations

import torch
from torch import nn

from normlab.norms import Norm, get_norm_class, list_norms
from normlab.norms.base import Fold
from normlab.surgery.adapters import get_adapter
from normlab.surgery.ports import fold_site, get_module, set_module, untie
from normlab.surgery.report import Change, OutputProbe, Probe, Report
from normlab.surgery.select import Where, select
from normlab.surgery.translate import Folded, module_label, read_norm, statistics_only


def norms_that_fold(fold: Fold) -> list[str]:
    """The registered norms whose `info.fold` is `fold` ("op", "affine" or "none"), sorted."""
    return [name for name in list_norms() if get_norm_class(name).info.fold == fold]


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
        where: a selector (`normlab.selection`: a type, a name glob, a list of globs or a
            predicate (name, module) -> bool); None = every norm.
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
                if params.note:
                    detail += f" ({params.note})"
            report.changes += fold_site(model, site, scale, shift)
            if new is not module:
                set_module(model, site.path, new)
            report.changes.append(Change(site.path, params.label, module_label(new), detail, spec))
    return model, probe_.measure(model, report)
