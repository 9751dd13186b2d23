"""HuggingFace's norm classes, recognized by what they compute rather than from a list of names.

A module that is neither a torch nor a normlab norm but that `normlab.selection.is_norm` calls a
norm (a class named `*LayerNorm`, `*RMSNorm`, or `*Norm` with a weight) is identified once per
class: a float32 copy with a random weight (and bias) runs on a random batch whose variance is
small (1e-4), so that eps matters, and its output is compared with each candidate

    rmsnorm:    y = x / sqrt(mean_D(x²) + eps) · (offset + w)
    layernorm:  y = (x − mean_D x) / sqrt(var_D(x) + eps) · (offset + w) + b

for offset 0 (Llama, Phi-3, T5, Qwen, OLMo-2, ...) and 1 (Gemma's zero-centred 1 + w), eps
being the module's own float attribute whose name contains "eps" (`variance_epsilon`, `eps`).
The first match within 1e-4 relative wins; a class matching none is not a norm surgery reads.
`hf_norm_classes` lists the norm classes the installed `transformers` defines, from its source.

The cast order (Llama casts to the input dtype before multiplying by w, Gemma and OLMo-2 after)
differs only below float32 precision; surgery computes in float32 and float64.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class HFNorm:
    kind: str        # the normlab norm computing the same function: "rmsnorm" or "layernorm"
    eps_attr: str    # attribute holding eps
    offset: float    # γ = offset + stored weight


def _eps_attr(module: nn.Module) -> str | None:
    names = [n for n, v in vars(module).items()
             if "eps" in n.lower() and isinstance(v, float) and not isinstance(v, bool)]
    return names[0] if names else None


def _candidate(x: Tensor, kind: str, eps: float, w: Tensor, b: Tensor | None) -> Tensor:
    x = x.double()
    if kind == "layernorm":
        x = x - x.mean(-1, keepdim=True)
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w
    return y + b if b is not None and kind == "layernorm" else y


@torch.no_grad()
def _probe(module: nn.Module, eps_attr: str) -> HFNorm | None:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor) or weight.dim() != 1:
        return None
    gen = torch.Generator().manual_seed(0)
    dim = weight.shape[0]
    copy_ = copy.deepcopy(module).float().cpu()
    w = torch.randn(dim, generator=gen)
    copy_.weight.copy_(w)
    bias = getattr(copy_, "bias", None)
    b = None
    if isinstance(bias, Tensor) and tuple(bias.shape) == (dim,):
        b = torch.randn(dim, generator=gen)
        bias.copy_(b)
    x = 0.01 * torch.randn(2, 3, dim, generator=gen) + 0.02 * torch.randn(2, 3, 1, generator=gen)
    try:
        y = copy_(x)
    except Exception:
        return None
    if not isinstance(y, Tensor) or y.shape != x.shape:
        return None
    eps = getattr(module, eps_attr)
    for kind in ("rmsnorm", "layernorm"):
        for offset in (0.0, 1.0):
            ref = _candidate(x, kind, eps, offset + w.double(), None if b is None else b.double())
            if (y.double() - ref).abs().max() <= 1e-4 * ref.abs().max():
                return HFNorm(kind, eps_attr, offset)
    return None


_SEEN: dict[type, HFNorm | None] = {}


def identify(module: nn.Module) -> HFNorm | None:
    """What a HuggingFace-style norm module computes (cached per class), or None."""
    cls = type(module)
    if cls not in _SEEN:
        eps_attr = _eps_attr(module)
        _SEEN[cls] = None if eps_attr is None else _probe(module, eps_attr)
    return _SEEN[cls]


_CLASS = re.compile(r"^class (\w*Norm\w*)\(", re.MULTILINE)


@functools.lru_cache(maxsize=1)
def hf_norm_classes() -> tuple[tuple[str, str], ...]:
    """(module, class name) of every class named *Norm* in the installed transformers' modeling
    files, read from their source (nothing is imported)."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or spec.origin is None:
        return ()
    root = Path(spec.origin).parent
    found = []
    for path in sorted((root / "models").glob("*/modeling_*.py")):
        module = "transformers.models." + path.parent.name + "." + path.stem
        found += [(module, name) for name in _CLASS.findall(path.read_text())]
    return tuple(found)
