"""swap_norms: replace selected norm modules of one model instance by registry norms.

Each selected norm is read (`read_norm`: effective γ, β, eps), a new norm is built with
`make_norm(to, dim, eps=<the old eps>, **kwargs)`, and what the new norm can hold is copied:
γ (Gemma's 1 + w included), β, the eps. The swap is exact only when the new norm computes the
same function: same family (LayerNorm → `layernorm`, RMSNorm → `rmsnorm`), same eps, and
nothing dropped. Anything else (LayerNorm → DyT, a β the target cannot hold, another eps) must
be asked for with approximate=True; the report says what changed.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from normlab.norms import Norm, get_norm_class, make_norm
from normlab.surgery.adapters import TRACED, adapter_for
from normlab.surgery.ports import get_module, set_module
from normlab.surgery.report import Change, OutputProbe, Probe, Report
from normlab.surgery.select import Where, norm_modules, select
from normlab.surgery.translate import NormParams, module_label, norm_spec, param_like, read_norm

NormSpec = str | type[Norm] | functools.partial


def _target(to: NormSpec) -> tuple[type[Norm], dict[str, Any]]:
    """The class `to` builds and the keywords it already fixes (a partial's)."""
    if isinstance(to, str):
        return get_norm_class(to), {}
    if isinstance(to, functools.partial):
        return to.func, dict(to.keywords)
    if isinstance(to, type) and issubclass(to, Norm):
        return to, {}
    raise TypeError(f"swap_norms: `to` must be a norm name, a Norm class or a partial, got {to!r}")


def _per_channel(module: nn.Module, attr: str, dim: int) -> torch.Tensor | None:
    t = getattr(module, attr, None)
    return t if isinstance(t, torch.Tensor) and tuple(t.shape) == (dim,) else None


@torch.no_grad()
def _translate(
    params: NormParams, to: NormSpec, kwargs: dict[str, Any]
) -> tuple[Norm, list[str], list[str]]:
    """Build the new norm; return it, what was carried over, and why it is not exact."""
    cls, fixed = _target(to)
    ctor = dict(kwargs)
    if "eps" not in ctor and "eps" not in fixed:
        ctor["eps"] = params.eps
    new = make_norm(to, params.dim, **ctor, **param_like(params))
    moved: list[str] = [params.note] if params.note else []
    inexact: list[str] = []
    if params.kind != cls.name:
        inexact.append(f"{params.kind} → {cls.name or cls.__name__} is a different function")
    if new.eps != params.eps:
        inexact.append(f"eps {params.eps:g} → {new.eps:g}")
    if params.is_normlab and type(params.module) is cls and \
            params.module.weight_offset == new.weight_offset:
        new.load_state_dict(params.module.state_dict())
        moved.append("state_dict copied")
        return new, moved, inexact
    weight, bias = _per_channel(new, "weight", params.dim), _per_channel(new, "bias", params.dim)
    if params.weight is not None:
        if weight is not None:
            weight.copy_(params.weight - new.weight_offset)  # γ = offset + w
            moved.append("γ copied")
        elif not bool(params.weight.eq(1).all()):
            inexact.append(f"γ dropped ({cls.name} has no per-channel weight)")
    if params.bias is not None:
        if bias is not None:
            bias.copy_(params.bias)
            moved.append("β copied")
        elif bool(params.bias.ne(0).any()):
            inexact.append(f"β dropped ({cls.name} has no per-channel bias)")
    return new, moved, inexact


def swap_norms(
    model: nn.Module,
    to: NormSpec,
    where: Where = None,
    *,
    approximate: bool = False,
    probe: Probe = None,
    **kwargs: Any,
) -> tuple[nn.Module, Report]:
    """Replace the selected norms of `model` (in place) by `make_norm(to, dim, **kwargs)`.

    Args:
        model: any module: a normlab GPT/ViT (its adapter lists the norms), a HuggingFace
            model or anything else (`where` picks among the norms `read_norm` can read; the
            error is measured on the probe batch, which a model without a config needs as
            `probe`).
        to: registry name, Norm class or functools.partial of one.
        where: a selector (`normlab.selection`): a type, a name glob ("*.ln_1"), a list of
            globs or a predicate (name, module) -> bool; None = every norm the adapter knows.
        approximate: allow swaps that change the function (e.g. LayerNorm → DyT, a dropped β).
            Without it such a swap raises ValueError naming why.
        probe: inputs for the error measurement (a tensor or forward keywords); None = random
            inputs from the adapter.
        kwargs: constructor keywords of the new norm; eps defaults to each old norm's eps.

    Returns (model, Report): every site with old → new and what was copied or dropped, and the
    max abs/rel output error on the probe batch.
    """
    adapter = adapter_for(model)
    # a swap needs no data flow: a traced model's candidates are all its norms
    layout = adapter.layout(model) if adapter not in (None, TRACED) else None
    candidates = [s.path for s in layout.norms] if layout else norm_modules(model)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    arch = layout.arch if layout else f"{model_type} ({type(model).__name__})" if model_type \
        else type(model).__name__
    paths = select(model, where, candidates, "swap_norms")
    plans = []
    for path in paths:
        module = get_module(model, path)
        params = read_norm(module)
        if params is None:
            raise ValueError(
                f"swap_norms: {path} ({type(module).__name__}) is not a norm surgery can read "
                f"(torch LayerNorm/RMSNorm, HuggingFace RMSNorm classes, normlab norms)"
            )
        plans.append((path, params, *_translate(params, to, kwargs)))
    inexact = [f"{path}: {'; '.join(why)}" for path, _, _, _, why in plans if why]
    if inexact and not approximate:
        raise ValueError(
            "swap_norms: the swap changes the function the model computes, so it is not exact ("
            + " | ".join(inexact) + "); pass approximate=True to accept the approximation"
        )
    probe_ = OutputProbe(model, adapter, probe)
    report = Report("swap_norms", arch, not inexact)
    for path, params, new, moved, why in plans:
        set_module(model, path, new)
        spec = None
        if new.name:
            ctor = {**_target(to)[1], **kwargs, "eps": new.eps}
            spec = norm_spec(new.name, params.dim, **ctor)
        detail = ", ".join(moved + [f"approximation: {w}" for w in why])
        report.changes.append(Change(path, params.label, module_label(new), detail, spec))
    return model, probe_.measure(model, report)
