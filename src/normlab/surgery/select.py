"""Choosing norm sites: `where` is a module type, a name glob, or a predicate (name, module).

    where=nn.LayerNorm                 # every instance of the type
    where="*.ln_1"                     # fnmatch on the dotted module path
    where=lambda name, m: "h.0." in name
    where=None                         # every norm the adapter knows (or, without one, every
                                       # module that `read_norm` recognizes)
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable

from torch import nn

from normlab.surgery.translate import read_norm

Where = type | str | Callable[[str, nn.Module], bool] | None


def matcher(where: Where) -> Callable[[str, nn.Module], bool]:
    if where is None:
        return lambda name, module: True
    if isinstance(where, type):
        return lambda name, module: isinstance(module, where)
    if isinstance(where, str):
        return lambda name, module: fnmatch.fnmatchcase(name, where)
    if callable(where):
        return where
    raise TypeError(
        f"where must be a module type, a name glob or a predicate (name, module) -> bool, "
        f"got {where!r}"
    )


def norm_modules(model: nn.Module) -> list[str]:
    """Paths of every module `read_norm` recognizes, outermost only (a norm inside a norm,
    e.g. PRepBN's two halves, belongs to its parent)."""
    found: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(p + ".") for p in found):
            continue
        if read_norm(module) is not None:
            found.append(name)
    return found


def select(model: nn.Module, where: Where, candidates: Iterable[str], what: str) -> list[str]:
    """The candidate paths that `where` selects; ValueError when it selects none."""
    match, candidates = matcher(where), list(candidates)
    chosen = [p for p in candidates if match(p, model.get_submodule(p) if p else model)]
    if not chosen:
        raise ValueError(
            f"{what}: where={where!r} selected no norm module; the candidates are: "
            f"{', '.join(candidates) or '(none)'}"
        )
    return chosen
