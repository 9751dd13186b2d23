"""Which submodules of a network are its blocks and its norms.

A selector is one of
    None                               auto-detection (below);
    "transformer.h.*"                  a glob on qualified module names (fnmatch);
    ["encoder.layer.*", "pooler"]      several globs (a name matching any is selected);
    lambda name, module: ...           a predicate.
Only the outermost match counts: "transformer.h.*" selects "transformer.h.0", not also
"transformer.h.0.attn" inside it.

Auto-detection:
    blocks: the entries of the first `nn.ModuleList` longer than one (in `named_modules`
        order): `transformer.h` (GPT-2), `model.layers` (Llama), `encoder.layer` (BERT),
        `blocks` (normlab's GPT).
    norms: instances of `normlab.norms.Norm`, `torch.nn.LayerNorm`, `torch.nn.RMSNorm`, and any
        class whose name ends in "LayerNorm" or "RMSNorm" (HuggingFace's `LlamaRMSNorm`, ...),
        matched by name so that `transformers` is never imported here.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence

from torch import nn

from normlab.norms.base import Norm

Predicate = Callable[[str, nn.Module], bool]
Selector = str | Sequence[str] | Predicate | None
Named = list[tuple[str, nn.Module]]

NORM_CLASS_SUFFIXES = ("LayerNorm", "RMSNorm")


def is_norm(name: str, module: nn.Module) -> bool:
    """The default norm predicate (see the module docstring)."""
    if isinstance(module, Norm | nn.LayerNorm):
        return True
    if hasattr(nn, "RMSNorm") and isinstance(module, nn.RMSNorm):
        return True
    return type(module).__name__.endswith(NORM_CLASS_SUFFIXES)


def default_blocks(model: nn.Module) -> Named:
    """The entries of the first `nn.ModuleList` of length > 1, as (qualified name, module)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 1:
            prefix = f"{name}." if name else ""
            return [(f"{prefix}{i}", block) for i, block in enumerate(module)]
    return []


def _predicate(selector: str | Sequence[str] | Predicate) -> Predicate:
    if callable(selector):
        return selector
    patterns = [selector] if isinstance(selector, str) else selector
    if (not isinstance(patterns, Sequence) or not patterns
            or not all(isinstance(p, str) for p in patterns)):
        raise TypeError(
            "a module selector must be a glob string, a non-empty list of globs or a "
            f"callable (name, module) -> bool; got {selector!r}"
        )
    return lambda name, _module: any(fnmatch.fnmatchcase(name, p) for p in patterns)


def outermost(model: nn.Module, predicate: Predicate) -> Named:
    """Modules (not the root) accepted by `predicate`, leaving out those inside another match."""
    found: Named = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(f"{outer}.") for outer, _ in found):
            continue
        if predicate(name, module):
            found.append((name, module))
    return found


def select_blocks(model: nn.Module, selector: Selector = None) -> Named:
    """The blocks of `model`; ValueError naming the fix when there are none."""
    blocks = default_blocks(model) if selector is None else outermost(model, _predicate(selector))
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
    return outermost(model, is_norm if selector is None else _predicate(selector))


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
