"""Choosing modules of a network, in one vocabulary, and the one rule for "this is a norm".

A selector (`Where`) is one of

    nn.LayerNorm, (nn.Linear, nn.Conv2d)   every instance of the type, or of any of the types;
    "*.ln_1"                               a glob on the dotted module path (fnmatch, case kept);
    ["encoder.layer.*", "pooler"]          several globs: a path matching any is selected;
    lambda name, module: ...               a predicate on (dotted path, module).

`None` stands for the caller's default: every norm for the diagnostics, every norm the adapter
knows for surgery. Surgery (`where=`), the diagnostics (`blocks=`, `norms=`) and the weight-side
normalizations (`types=`, `predicate=`) all read selectors through `matcher`, and all ask
`is_norm` whether a module normalizes.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Sequence

from torch import Tensor, nn

from normlab.norms.base import Norm

Predicate = Callable[[str, nn.Module], bool]
Where = type | tuple[type, ...] | str | Sequence[str] | Predicate | None
Named = list[tuple[str, nn.Module]]

TORCH_NORMS: tuple[type[nn.Module], ...] = (
    nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.SyncBatchNorm,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.LazyBatchNorm1d, nn.LazyBatchNorm2d, nn.LazyBatchNorm3d,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
    nn.LazyInstanceNorm1d, nn.LazyInstanceNorm2d, nn.LazyInstanceNorm3d,
)
NORM_CLASS_SUFFIXES = ("LayerNorm", "RMSNorm")
_NORM_NAME = re.compile(r"Norm(?:[123]d)?$")


def is_norm(module: nn.Module) -> bool:
    """Whether `module` is a normalization layer.

    True for every normlab `Norm`, for torch's normalization layers (`TORCH_NORMS`: LayerNorm,
    RMSNorm, GroupNorm, LocalResponseNorm, the BatchNorm and InstanceNorm families) and, by
    class name so that `transformers` is never imported, for the norms of other libraries:
    a class named `*LayerNorm` or `*RMSNorm` (HuggingFace's `LlamaRMSNorm`, `T5LayerNorm`, the
    parameter-free `OlmoLayerNorm`), or named `*Norm` / `*Norm1d|2d|3d` and holding a `weight`
    tensor (DETR's `FrozenBatchNorm2d`); the weight keeps out wrappers such as a `PreNorm(fn)`.
    """
    if isinstance(module, (Norm, *TORCH_NORMS)):
        return True
    name = type(module).__name__
    if name.endswith(NORM_CLASS_SUFFIXES):
        return True
    return bool(_NORM_NAME.search(name)) and isinstance(getattr(module, "weight", None), Tensor)


def matcher(where: Where) -> Predicate:
    """The predicate (name, module) -> bool that the selector `where` stands for; None selects
    everything. TypeError naming the accepted forms for anything else."""
    if where is None:
        return lambda name, module: True
    if isinstance(where, type) or (
        isinstance(where, tuple) and where and all(isinstance(t, type) for t in where)
    ):
        return lambda name, module: isinstance(module, where)
    if isinstance(where, str):
        where = [where]
    if isinstance(where, Sequence) and where and all(isinstance(p, str) for p in where):
        patterns = list(where)
        return lambda name, module: any(fnmatch.fnmatchcase(name, p) for p in patterns)
    if callable(where):
        return where
    raise TypeError(
        "a module selector must be a module type (or a tuple of types), a name glob, a "
        f"non-empty list of globs or a predicate (name, module) -> bool; got {where!r}"
    )


def find_modules(model: nn.Module, where: Where, *, root: bool, nested: bool) -> Named:
    """`(dotted path, module)` of the modules of `model` that `where` selects, in
    `named_modules` order.

    root: whether `model` itself (path "") may be selected. nested: whether a match inside
    another match counts too; without it only the outermost match does ("transformer.h.*"
    selects "transformer.h.0", not also "transformer.h.0.attn"; PRepBN's two inner norms
    belong to it).
    """
    match = matcher(where)
    found: Named = []
    for name, module in model.named_modules():
        if not name and not root:
            continue
        if not nested and any(_inside(name, outer) for outer, _ in found):
            continue
        if match(name, module):
            found.append((name, module))
    return found


def _inside(name: str, outer: str) -> bool:
    return not outer or name.startswith(f"{outer}.")
