"""fold_norms: move norm affines (and, in eval mode, whole batch-statistic norms) into Linears.

Two folds, both exact. The γ/β fold is the first step of the Pre-LN → Pre-RMSNorm conversion of
Jiang, Gu, Zhu, Pan, "Pre-RMSNorm and Pre-CRMSNorm Transformers: Equivalent and Efficient Pre-LN
Transformers" (NeurIPS 2023); the op-fold is the classic folding of an inference-mode BatchNorm
into the adjacent Linear.

- γ-fold, for torch/HuggingFace LayerNorm and RMSNorm and normlab norms with
  `info.fold == "affine"` (`norms_that_fold("affine")`): each reader Linear absorbs the affine,
  W' = W·diag(γ), b' = b + Wβ, and the norm keeps its statistics with the affine removed. A
  torch/HuggingFace norm keeps its class, its weight set to 1 and its bias to 0, so that the
  model keeps the parameters its class defines; where a reader has no bias to take Wβ (GPT-2's
  LM head), β stays in the norm as β/γ instead: W·diag(γ)(n + β/γ) = W(γ⊙n + β). A
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

- FlashNorm (flash=True, `flashnorm.py`): the norm itself goes into its readers.

A norm whose output is the residual stream (Post-LN) or reaches a non-Linear consumer is
refused; a norm no Linear reads (the output of a model without a head) is kept with a note.
"""

from __future__ import annotations

import torch
from torch import nn

from normlab.norms import Norm, get_norm_class, list_norms
from normlab.norms.base import Fold
from normlab.surgery.adapters import NormSite, get_adapter
from normlab.surgery.flashnorm import deferred_reader
from normlab.surgery.ports import fold_site, get_module, set_module, untie
from normlab.surgery.report import Change, OutputProbe, Probe, Report
from normlab.surgery.select import Where, select
from normlab.surgery.translate import (
    Folded,
    NormParams,
    module_label,
    read_norm,
    statistics_only,
)


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


def _why_not_flash(site: NormSite, params: NormParams) -> str | None:
    """None when FlashNorm applies to `site`, else the reason."""
    if params.kind not in ("rmsnorm", "layernorm") or not params.per_channel:
        return f"FlashNorm defers an RMSNorm or LayerNorm, not {params.kind}"
    if not site.readers:
        return "no Linear reads it"
    if site.input_scale != 1.0:
        return f"its readers see it scaled by {site.input_scale:g}"
    if any(p.kind not in ("linear", "conv1d") for p in site.readers):
        return "a reader is not a Linear"
    return None


def _flash(model: nn.Module, site: NormSite, params: NormParams) -> list[Change]:
    """Replace every reader of `site` by a `DeferredNormLinear` holding γ, β and the centring."""
    changes = []
    for port in site.readers:
        old = get_module(model, port.path)
        weight = old.weight.t() if port.kind == "conv1d" else old.weight
        new = deferred_reader(weight, old.bias, params.weight, params.bias, eps=params.eps,
                              center=params.kind == "layernorm")
        set_module(model, port.path, new)
        changes.append(Change(port.path, module_label(old), module_label(new),
                              "FlashNorm: W·diag(γ) (centred for LayerNorm), 1/rms after the "
                              "matmul", new.spec()))
    return changes


def _shift_stays(model: nn.Module, site: NormSite, params: NormParams) -> bool:
    """Whether β stays in the norm as β/γ: a reader has no bias to take W·β (a new bias would
    make a parameter the class does not have) and γ has no zero to divide by."""
    if params.bias is None or not bool(params.bias.ne(0).any()) or params.weight is None:
        return False
    no_bias = any(get_module(model, p.path).bias is None for p in site.readers)
    return no_bias and bool(params.weight.ne(0).all())


@torch.no_grad()
def _identity_affine(params: NormParams, shift_stays: bool) -> None:
    """Set a torch/HuggingFace norm's stored weight to the identity γ = 1 (w = 1 − offset,
    Gemma's 0) and its bias to 0, or to β/γ when the shift stays in the norm, in place: the
    class and its parameters stay."""
    module = params.module
    if shift_stays:
        ratio = params.bias.detach().double() / params.weight.detach().double()
        module.bias.copy_(ratio.to(module.bias.dtype))
    elif getattr(module, "bias", None) is not None:
        module.bias.zero_()
    module.weight.fill_(1.0 - params.offset)


def fold_norms(
    model: nn.Module, where: Where = None, *, flash: bool = False, probe: Probe = None
) -> tuple[nn.Module, Report]:
    """Fold the selected norms of `model` (in place) into the Linears that read them.

    Args:
        model: a HuggingFace model (its layout traced) or a normlab GPT/ViT.
        where: a selector (`normlab.selection`: a type, a name glob, a list of globs or a
            predicate (name, module) -> bool); None = every norm.
        flash: FlashNorm (`flashnorm.py`): an RMSNorm or LayerNorm whose readers are all
            Linears is removed, each reader becoming a `DeferredNormLinear` that takes γ (β,
            the centring) and applies 1/rms after its matmul. Sites where it does not apply
            get the ordinary fold, with a note.
        probe: inputs for the error measurement; None = random inputs from the adapter.

    The ordinary fold keeps every torch/HuggingFace module class: the readers take γ, β and the
    norm's weight is set to 1 (bias 0) in place, so a folded HuggingFace model saves as an
    ordinary `save_pretrained` folder (unless a reader had to gain a bias for β).

    Raises ValueError, before changing anything, when a selected norm feeds the residual stream
    (Post-LN) or a non-Linear consumer, or when a batch-statistic norm is in training mode.
    """
    adapter = get_adapter(model)
    layout = adapter.layout(model, probe)
    chosen = set(select(model, where, [s.path for s in layout.norms], "fold_norms"))
    plans = []
    for site in layout.norms:
        if site.path not in chosen:
            continue
        if site.role in ("post", "start"):
            raise ValueError(
                f"fold_norms: {site.path} feeds a non-Linear consumer "
                f"({site.why or 'its output is the residual stream'}; a Post-LN or sandwich "
                f"norm feeds the residual stream, a QK-norm feeds RoPE or the attention "
                f"product), so its affine has no Linear to move into; select the others with "
                f"where=...; refusing before changing anything"
            )
        module = get_module(model, site.path)
        mode = _mode(site.path, module)
        if mode in ("op", "affine") and not site.readers:
            mode = "kept: no Linear reads it (its output is the model output)"
        if flash and mode in ("affine", "kept: no affine to fold"):
            why = _why_not_flash(site, read_norm(module))
            mode = "flash" if why is None else mode
            if why is not None:
                plans.append((site, module, f"note: not FlashNorm ({why})"))
        plans.append((site, module, mode))
    probe_ = OutputProbe(model, adapter, probe)
    report = Report("fold_norms (FlashNorm)" if flash else "fold_norms", layout.arch, exact=True)
    folding = {p.path for site, _, mode in plans if mode in ("op", "affine", "flash")
               for p in site.readers}
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
            if mode not in ("op", "affine", "flash"):
                report.notes.append(f"{site.path}: {mode}")
                continue
            params = read_norm(module)
            if mode == "flash":
                report.changes += _flash(model, site, params)
                new, spec = Folded(), {"type": "identity"}
                detail = "FlashNorm: the norm is removed, its readers normalize after the matmul"
            elif mode == "op":
                scale, shift = module.eval_affine()
                report.changes += fold_site(model, site, scale, shift)
                new, spec = Folded(), {"type": "identity"}
                detail = "eval-mode affine (eval_affine) folded; norm removed"
            elif params.is_normlab:
                report.changes += fold_site(model, site, params.weight, params.bias)
                new, spec = statistics_only(params)
                detail = "γ/β folded; statistics kept, affine removed"
            else:
                stays = _shift_stays(model, site, params)
                shift = None if stays else params.bias
                report.changes += fold_site(model, site, params.weight, shift)
                _identity_affine(params, stays)
                new, spec = module, None
                detail = ("γ folded; weight set to 1 and β kept as β/γ (a reader has no bias), "
                          "class kept" if stays else
                          "γ/β folded; weight set to 1 (bias 0) in place, class kept")
            if params.note and mode != "op":
                detail += f" ({params.note})"
            if new is not module:
                set_module(model, site.path, new)
            report.changes.append(Change(site.path, params.label, module_label(new), detail, spec))
    return model, probe_.measure(model, report)
