"""Choosing norm sites: `where` is a selector of `normlab.selection`.

    where=nn.LayerNorm                 # every instance of the type
    where="*.ln_1"                     # fnmatch on the dotted module path
    where=["*.ln_1", "*.ln_2"]         # any of several globs
    where=lambda name, m: "h.0." in name
    where=None                         # every norm the adapter knows (or, without one, every
                                       # norm, `is_norm`, that `read_norm` can read)
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from normlab.selection import Where, find_modules, is_norm, matcher
from normlab.surgery.translate import read_norm

__all__ = ["Where", "norm_modules", "select"]


def norm_modules(model: nn.Module) -> list[str]:
    """Paths of the norms of `model` that `read_norm` can read, outermost only (a norm inside a
    norm, e.g. PRepBN's two halves, belongs to its parent)."""
    readable = find_modules(model, lambda name, m: is_norm(m) and read_norm(m) is not None,
                            root=True, nested=False)
    return [name for name, _ in readable]


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
