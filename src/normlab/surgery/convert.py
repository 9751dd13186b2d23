"""to_rmsnorm / to_crmsnorm: the exact Pre-LN → Pre-RMSNorm → Pre-CRMSNorm conversion.

Steps (Jiang, Gu, Zhu, Pan, "Pre-RMSNorm and Pre-CRMSNorm Transformers: Equivalent and
Efficient Pre-LN Transformers", NeurIPS 2023), on one model instance, in place:

1. Untie the head from the token embedding: the head will hold E·diag(γ_f), the embedding E
   recentred (and compressed), so they stop being one tensor.
2. Fold every LayerNorm's γ, β into all the Linears that read it (Q/K/V or a fused QKV,
   fc1/gate/up, the head): W' = W·diag(γ), b' = b + Wβ. Where the block scales the norm output
   by a constant s (LNS's 1/√ℓ), the readers see s·(γ⊙n + β) and the block keeps applying s:
   γ folds as is and β as s·β, and s·n is as zero-mean as n, so every later step holds.
3. Recentre every writer to the residual stream (embeddings, position tables, cls token, patch
   projection, attention out-projection, MLP fc2/down): W' = W − mean_D(W), b' = b − mean_D(b).
   Now every LayerNorm input has zero mean, so LN(x) = RMSNorm(x) with the same eps (LN's
   variance is the biased one, which is what makes this exact).
4. Replace each LayerNorm by normlab's `rmsnorm` with affine=False.
5. (to_crmsnorm) Keep the first D−1 stream channels of every writer, read them with
   W' = W[:, :D−1] − W[:, D−1:D], and use normlab's `crmsnorm` (affine=False) on D−1 channels.

An embedding norm that starts the stream (BLOOM's; role "start") keeps its LayerNorm
statistics and writes P(γ ⊙ n + β) through a D×D map (`stream_start.py`).

A final norm that no Linear reads (a model without a head returns it) keeps its γ, β inside an
`rmsnorm(affine=True, bias=True)`; to_crmsnorm refuses such a model, whose output would shrink
to D−1 channels. Anything the adapter reports as breaking the zero-mean stream (Post-LN, an
RMSNorm model, cross-attention, norms or gates on the stream) is refused with the reason.
"""

from __future__ import annotations

import torch
from torch import nn

from normlab.surgery.adapters import Adapter, Layout, NormSite, get_adapter
from normlab.surgery.ports import (
    compress_writer,
    describe,
    fold_site,
    get_module,
    recentre_writer,
    set_module,
    untie,
)
from normlab.surgery.report import Change, OutputProbe, Probe, Report
from normlab.surgery.stream_start import recentred
from normlab.surgery.translate import (
    NormParams,
    build_module,
    module_label,
    norm_spec,
    param_like,
    read_norm,
)


def to_rmsnorm(model: nn.Module, *, probe: Probe = None) -> tuple[nn.Module, Report]:
    """Convert a Pre-LN model into the equivalent Pre-RMSNorm model (in place).

    Raises ValueError naming the reason when the conversion would not be exact (Post-LN, a
    model already on RMSNorm, another writer to the stream the adapter cannot account for).
    """
    return _convert(model, "to_rmsnorm", compress=False, probe=probe)


def to_crmsnorm(model: nn.Module, *, probe: Probe = None) -> tuple[nn.Module, Report]:
    """Convert a Pre-LN model into the equivalent Pre-CRMSNorm model (stream width D−1)."""
    return _convert(model, "to_crmsnorm", compress=True, probe=probe)


def _check(op: str, model: nn.Module, layout: Layout, compress: bool) -> list[NormParams]:
    """Every reason to refuse, before anything is touched."""
    if layout.convert_refusal:
        raise ValueError(f"{op}: {layout.convert_refusal}")
    if not layout.writers:
        raise ValueError(f"{op}: the {layout.arch} adapter lists no writers to the stream")
    found = []
    for site in layout.norms:
        params = read_norm(get_module(model, site.path))
        if site.role == "post":
            why = site.why or "its output is the residual stream"
            raise ValueError(
                f"{op}: {site.path} is a Post-LN norm ({why}), so the stream is not zero-mean at "
                f"the next norm; only Pre-LN models convert exactly"
            )
        if site.role == "inner":
            raise ValueError(
                f"{op}: {site.path} does not read the residual stream (it normalizes another "
                f"tensor); only Pre-LN models convert exactly"
            )
        if params is None or params.kind != "layernorm":
            what = params.label if params else type(get_module(model, site.path)).__name__
            raise ValueError(
                f"{op}: {site.path} is {what}, not a LayerNorm; the exact conversion starts from "
                f"a Pre-LN model whose norms are all LayerNorms"
            )
        if compress and not site.readers and site.role != "start":
            raise ValueError(
                f"{op}: no Linear reads {site.path}, whose output is the model output; a "
                f"compressed stream would return D−1 = {params.dim - 1} channels. Use a model "
                f"with a head (e.g. the LM-head class) or to_rmsnorm"
            )
        found.append(params)
    return found


def _convert(
    model: nn.Module, op: str, *, compress: bool, probe: Probe
) -> tuple[nn.Module, Report]:
    adapter: Adapter = get_adapter(model)
    layout = adapter.layout(model, probe)
    norms = _check(op, model, layout, compress)
    probe_ = OutputProbe(model, adapter, probe)
    report = Report(op, layout.arch, exact=True)
    with torch.no_grad():
        for head, emb in layout.ties:
            untie(model, head)
            adapter.untie(model)
            report.changes.append(Change(
                head.removesuffix(".weight"), f"tied to {emb}", "own weight",
                "untied: the head takes γ/β, the embedding is recentred",
            ))
        new_norms = []
        for site, params in zip(layout.norms, norms, strict=True):
            new_norms.append(_fold_site(model, site, params, compress, report))
        for port in layout.writers:
            old = describe(model, port)
            recentre_writer(model, port)
            detail = "recentred: zero-mean output over D"
            if compress:
                compress_writer(model, port)
                detail += "; first D−1 channels kept"
            report.changes.append(Change(port.path, old, describe(model, port), detail))
        for site, params, (spec, detail) in zip(layout.norms, norms, new_norms, strict=True):
            if site.role == "start":
                out = params.dim - 1 if compress else params.dim
                new = recentred(params.weight, params.bias, params.dim, out, params.eps,
                                **param_like(params))
                set_module(model, site.path, new)
                report.changes.append(
                    Change(site.path, params.label, module_label(new), detail, new.spec()))
                continue
            new = build_module(spec, **param_like(params))
            if spec["kwargs"].get("affine"):
                new.weight.copy_(params.weight if params.weight is not None else 1)
                if params.bias is not None:
                    new.bias.copy_(params.bias)
            set_module(model, site.path, new)
            report.changes.append(Change(site.path, params.label, module_label(new), detail, spec))
    return model, probe_.measure(model, report)


def _fold_site(
    model: nn.Module, site: NormSite, params: NormParams, compress: bool, report: Report
) -> tuple[dict, str]:
    """Fold one LayerNorm into its readers (compressing them); return the new norm's spec."""
    if site.role == "start":
        return {}, ("starts the stream: LN without affine, then the D×D map P·diag(γ), Pβ "
                    "(stream_start.py)" + ("; first D−1 rows" if compress else ""))
    report.changes += fold_site(model, site, params.weight, params.bias, compress=compress)
    readers = site.readers
    if compress:
        spec = norm_spec("crmsnorm", params.dim - 1, eps=params.eps, affine=False)
        return spec, "LN = RMS on the zero-mean stream, stored in D−1 channels"
    if readers:
        spec = norm_spec("rmsnorm", params.dim, eps=params.eps, affine=False)
        return spec, f"γ/β folded into {', '.join(p.path for p in readers)}; LN = RMS (mean 0)"
    spec = norm_spec(
        "rmsnorm", params.dim, eps=params.eps, affine=True, bias=params.bias is not None
    )
    return spec, "no Linear reads it (model output): γ/β kept in the RMSNorm; LN = RMS (mean 0)"
