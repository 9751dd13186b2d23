"""Which submodules of a network are its blocks and its norms.

A selector is one of `normlab.selection` (a type, a glob on qualified module names, a list of
globs, a predicate (name, module) -> bool) or None for auto-detection (below). Only the
outermost match counts, and never the root: "transformer.h.*" selects "transformer.h.0", not
also "transformer.h.0.attn" inside it.

Auto-detection:
    blocks: the entries of the first `nn.ModuleList` longer than one (in `named_modules`
        order): `transformer.h` (GPT-2), `model.layers` (Llama), `encoder.layer` (BERT),
        `blocks` (normlab's GPT).
    norms: every module `normlab.selection.is_norm` accepts: normlab norms, torch's
        normalization layers, and other libraries' norms recognised by class name (HuggingFace's
        `LlamaRMSNorm`, ...), so that `transformers` is never imported here.
"""

from __future__ import annotations

from torch import nn

from normlab.norms.base import Norm
from normlab.selection import NORM_CLASS_SUFFIXES, Named, Where, find_modules, is_norm

Selector = Where


def default_blocks(model: nn.Module) -> Named:
    """The entries of the first `nn.ModuleList` of length > 1, as (qualified name, module)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 1:
            prefix = f"{name}." if name else ""
            return [(f"{prefix}{i}", block) for i, block in enumerate(module)]
    return []


def select_blocks(model: nn.Module, selector: Selector = None) -> Named:
    """The blocks of `model`; ValueError naming the fix when there are none."""
    blocks = (default_blocks(model) if selector is None
              else find_modules(model, selector, root=False, nested=False))
    if not blocks:
        how = ("found no nn.ModuleList with more than one entry" if selector is None
               else f"the selector {selector!r} matched no module")
        raise ValueError(
            f"{type(model).__name__}: {how}; pass blocks= as a glob of module names "
            "(e.g. 'transformer.h.*') or a predicate (name, module) -> bool"
        )
    return blocks


def select_norms(model: nn.Module, selector: Selector = None) -> Named:
    """The norms of `model` (possibly none: a network may have no normalization at all)."""
    where = (lambda name, module: is_norm(module)) if selector is None else selector
    return find_modules(model, where, root=False, nested=False)


def block_of(name: str, blocks: Named) -> int | None:
    """The index of the block that contains the module `name`, or None."""
    for index, (block_name, _) in enumerate(blocks):
        if name == block_name or name.startswith(f"{block_name}."):
            return index
    return None


def norm_kind(module: nn.Module) -> str:
    """A short name for a norm: the registry name of a normlab norm, else from the class name."""
    if isinstance(module, Norm) and module.name:
        return module.name
    cls = type(module).__name__
    for suffix in NORM_CLASS_SUFFIXES:
        if cls.endswith(suffix):
            return suffix.lower()
    return cls.lower()
