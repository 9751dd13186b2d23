"""Read any supported norm module into one description, and build normlab norms from specs.

`read_norm` knows `torch.nn.LayerNorm`, `torch.nn.RMSNorm`, HuggingFace's RMSNorm classes
(`adapters/hf_norms.py`: `variance_epsilon`, Gemma's 1 + w) and every normlab `Norm`. What it
returns is the *function* the module computes: the effective γ (offset applied), β and eps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from normlab.norms import Norm, make_norm
from normlab.surgery.adapters.hf_norms import HF_NORMS


@dataclass(frozen=True)
class NormParams:
    """What a norm module computes, in normlab's terms.

    kind: "layernorm" or "rmsnorm" for torch/HuggingFace layers, the registry name for normlab
    norms. weight: the effective per-channel γ (None = ones); bias: β (None = zeros).
    """

    kind: str
    dim: int
    eps: float
    weight: Tensor | None
    bias: Tensor | None
    module: nn.Module
    note: str = ""
    per_channel: bool = True  # False: an affine exists but is not one γ/β per channel

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


def _per_channel(t: Tensor | None, dim: int) -> Tensor | None:
    return t if t is not None and tuple(t.shape) == (dim,) else None


def read_norm(module: nn.Module) -> NormParams | None:
    """The `NormParams` of `module`, or None when it is not a norm surgery knows."""
    if isinstance(module, Norm):
        weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
        w, b = _per_channel(weight, module.dim), _per_channel(bias, module.dim)
        odd = [n for n, p in module.named_parameters(recurse=False) if n in ("weight", "bias")
               and tuple(p.shape) != (module.dim,)]
        if odd:
            return NormParams(module.name, module.dim, module.eps, w, b, module,
                              "its affine is not one γ/β per channel", per_channel=False)
        return NormParams(module.name, module.dim, module.eps, w, b, module)
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
    hf = HF_NORMS.get(type(module).__name__)
    if hf is None:
        return None
    weight = module.weight
    note = ""
    if hf.offset:
        weight = weight + hf.offset
        note = f"γ = {hf.offset:g} + stored weight ({type(module).__name__} convention)"
    return NormParams(
        hf.kind, weight.shape[0], getattr(module, hf.eps_attr), weight, None, module, note
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
    """The module a spec describes (a normlab norm, or `Folded` for a folded-away norm)."""
    if spec["type"] == "identity":
        return Folded()
    if spec["type"] == "norm":
        return make_norm(spec["name"], spec["dim"], **spec["kwargs"], **placement)
    raise ValueError(f"unknown module spec type {spec['type']!r} (expected 'norm' or 'identity')")


def statistics_only(params: NormParams) -> tuple[nn.Module, dict[str, Any] | None]:
    """The norm with its affine removed, and its spec (None when changed in place).

    torch/HuggingFace LayerNorm and RMSNorm become normlab's `layernorm`/`rmsnorm` with
    affine=False and the same eps. A normlab norm keeps every other setting and buffer: its
    `weight`/`bias` are set to None in place.
    """
    if params.is_normlab:
        norm = params.module
        if params.weight is not None:
            norm.weight = None
        if params.bias is not None:
            norm.bias = None
        norm.affine = False
        return norm, None
    spec = norm_spec(params.kind, params.dim, eps=params.eps, affine=False)
    return build_module(spec, **param_like(params)), spec
