"""Read any supported norm module into one description, and build normlab norms from specs.

`read_norm` knows `torch.nn.LayerNorm`, `torch.nn.RMSNorm`, HuggingFace's norm classes
(`hf_norms.py`: recognized by what they compute, Gemma's 1 + w included) and every
normlab `Norm`. What it
returns is the *function* the module computes: the effective γ (offset applied), β and eps.

A normlab norm's affine is read from the norm itself, not from a list of names: it is every
parameter that the same class built with affine=False does not have. `bias` adds to the output;
every other such parameter (the per-channel `weight`, ScaleNorm's scalar `gain`) multiplies it,
relative to the constant the affine=False form keeps in its place (ScaleNorm keeps the buffer
g = √D, so γ = g/√D; a norm that keeps nothing there has γ = the parameter itself). A scalar
gain is expanded to one γ per channel.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from normlab.norms import Norm, make_norm
from normlab.selection import is_norm
from normlab.surgery.flashnorm import DeferredNormLinear
from normlab.surgery.hf_norms import identify
from normlab.surgery.stream_start import RecentredNorm


@dataclass(frozen=True)
class NormParams:
    """What a norm module computes, in normlab's terms.

    kind: "layernorm" or "rmsnorm" for torch/HuggingFace layers, the registry name for normlab
    norms. weight: the effective per-channel γ (None = ones); bias: β (None = zeros).
    affine: for normlab norms, the names of the parameters that hold γ/β (what affine=False
    drops).
    """

    kind: str
    dim: int
    eps: float
    weight: Tensor | None
    bias: Tensor | None
    module: nn.Module
    note: str = ""
    per_channel: bool = True  # False: an affine exists but is not one γ/β per channel
    affine: tuple[str, ...] = ()
    offset: float = 0.0  # HuggingFace norms computing (offset + w): Gemma's 1 + w

    @property
    def is_normlab(self) -> bool:
        return isinstance(self.module, Norm)

    @property
    def label(self) -> str:
        return module_label(self.module)


def module_label(module: nn.Module) -> str:
    """"torch.LayerNorm(32, eps=1e-05, ...)", "normlab.RMSNorm(...)": the package shows whose."""
    package = type(module).__module__.split(".")[0]
    return f"{package}.{type(module).__name__}({module.extra_repr()})"


@dataclass(frozen=True)
class _PlainForm:
    """What `cls(dim, affine=False)` holds: its parameter names, its buffers, which persist."""

    parameters: frozenset[str]
    buffers: dict[str, Tensor]
    transient: frozenset[str]


@functools.lru_cache(maxsize=64)
def _plain_form(cls: type[Norm], dim: int) -> _PlainForm | None:
    """The affine=False form of a normlab norm class at width `dim` (None: it cannot be built)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plain = cls(dim, affine=False)
    except (TypeError, ValueError):
        return None
    return _PlainForm(
        frozenset(n for n, _ in plain.named_parameters(recurse=False)),
        dict(plain.named_buffers(recurse=False)),
        frozenset(plain._non_persistent_buffers_set),
    )


def _read_normlab(norm: Norm) -> NormParams:
    """γ, β and their parameter names of a normlab norm (see the module docstring)."""
    own = dict(norm.named_parameters(recurse=False))
    plain = _plain_form(type(norm), norm.dim)
    if plain is None:  # a class without the common constructor: affine_params' names
        names, fixed = [n for n in ("weight", "bias") if n in own], {}
    else:
        names, fixed = [n for n in own if n not in plain.parameters], plain.buffers
    channels = (norm.dim,)
    scale = shift = None
    odd, notes = [], []
    for name in names:
        p = own[name]
        if name == "bias" and tuple(p.shape) == channels:
            shift = p
        elif name != "bias" and tuple(p.shape) in ((), channels):
            factor = p
            if name in fixed:  # relative to the constant the affine=False form keeps here
                const = fixed[name]
                factor = (p.detach().double() / const.to(p.device, torch.float64)).to(p.dtype)
                value = f"{const.item():g}" if const.dim() == 0 else "its affine=False value"
                notes.append(f"γ = {name} / {value} (what {norm.name} keeps without affine)")
            if name == "weight" and norm.weight_offset:  # zero-centred: γ = offset + w
                factor = p + norm.weight_offset
                notes.append(f"γ = {norm.weight_offset:g} + stored weight (zero-centred)")
            if factor.dim() == 0:
                factor = factor.expand(channels)
                notes.append(f"scalar {name} expanded to {norm.dim} channels")
            scale = factor if scale is None else scale * factor
        else:
            odd.append(name)
    if odd:
        return NormParams(
            norm.name, norm.dim, norm.eps, scale, shift, norm,
            f"its affine ({', '.join(odd)}) is not one γ/β per channel", per_channel=False,
            affine=tuple(names),
        )
    return NormParams(
        norm.name, norm.dim, norm.eps, scale, shift, norm, "; ".join(notes), affine=tuple(names)
    )


def read_norm(module: nn.Module) -> NormParams | None:
    """The `NormParams` of `module`, or None when it is not a norm surgery knows."""
    if isinstance(module, Norm):
        return _read_normlab(module)
    if isinstance(module, nn.LayerNorm):
        if len(module.normalized_shape) != 1:
            raise ValueError(
                f"LayerNorm over {module.normalized_shape} normalizes more than the last axis; "
                f"surgery handles per-token norms over one channel axis only"
            )
        return NormParams(
            "layernorm", module.normalized_shape[0], module.eps, module.weight, module.bias, module
        )
    if isinstance(module, nn.RMSNorm):
        if len(module.normalized_shape) != 1:
            raise ValueError(
                f"RMSNorm over {module.normalized_shape} normalizes more than the last axis; "
                f"surgery handles per-token norms over one channel axis only"
            )
        eps, note = module.eps, ""
        if eps is None:
            dtype = module.weight.dtype if module.weight is not None else torch.float32
            eps = torch.finfo(dtype).eps
            note = f"eps=None means finfo({dtype}).eps = {eps:g}, written explicitly"
        return NormParams(
            "rmsnorm", module.normalized_shape[0], eps, module.weight, None, module, note
        )
    hf = identify(module) if is_norm(module) else None
    if hf is None:
        return None
    weight = module.weight
    note = ""
    if hf.offset:
        weight = weight + hf.offset
        note = f"γ = {hf.offset:g} + stored weight ({type(module).__name__} convention)"
    bias = getattr(module, "bias", None) if hf.kind == "layernorm" else None
    return NormParams(
        hf.kind, weight.shape[0], getattr(module, hf.eps_attr), weight, bias, module, note,
        offset=hf.offset,
    )


def param_like(params: NormParams) -> dict[str, Any]:
    """device/dtype keywords that put a new norm where the old one lives."""
    for t in (params.weight, params.bias, *params.module.parameters(), *params.module.buffers()):
        if t is not None and t.is_floating_point():
            return {"device": t.device, "dtype": t.dtype}
    return {}


def norm_spec(name: str, dim: int, **kwargs: Any) -> dict[str, Any]:
    """A JSON-able recipe for `build_norm`: registry name, width and constructor keywords."""
    return {"type": "norm", "name": name, "dim": dim, "kwargs": kwargs}


class Folded(nn.Identity):
    """Where a norm was folded away: returns its input (and accepts the norm's `mask`)."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return x


def build_module(spec: dict[str, Any], **placement: Any) -> nn.Module:
    """The module a spec describes (a normlab norm, `Folded` for a folded-away norm, or a
    FlashNorm reader)."""
    if spec["type"] == "identity":
        return Folded()
    if spec["type"] == "norm":
        return make_norm(spec["name"], spec["dim"], **spec["kwargs"], **placement)
    if spec["type"] == "deferred_linear":
        return DeferredNormLinear(spec["in"], spec["out"], spec["bias"], eps=spec["eps"],
                                  center=spec["center"], **placement)
    if spec["type"] == "recentred_norm":
        return RecentredNorm(spec["dim"], spec["out"], eps=spec["eps"], **placement)
    raise ValueError(f"unknown module spec type {spec['type']!r} (expected 'norm', 'identity', "
                     f"'deferred_linear' or 'recentred_norm')")


# the spec of a normlab norm changed in place into its affine=False form: `save_converted`
# applies it to the spec that built the norm
AFFINE_REMOVED = {"type": "affine_removed"}


def statistics_only(params: NormParams) -> tuple[nn.Module, dict[str, Any]]:
    """A normlab norm changed in place into its affine=False form, and `AFFINE_REMOVED`.

    It keeps every other setting and buffer; each affine parameter becomes what that form holds
    in its place (None, or a constant buffer such as ScaleNorm's g = √D).
    """
    norm = params.module
    plain = _plain_form(type(norm), norm.dim)
    for name in params.affine:
        old = getattr(norm, name)
        delattr(norm, name)
        if plain is not None and name in plain.buffers:
            const = plain.buffers[name].to(old.device, old.dtype).clone()
            norm.register_buffer(name, const, persistent=name not in plain.transient)
        else:
            norm.register_parameter(name, None)
    norm.affine = False
    return norm, dict(AFFINE_REMOVED)
