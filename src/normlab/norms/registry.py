"""The norm registry: `register_norm`, `make_norm`, `list_norms`, `NORMS`.

    @register_norm("rmsnorm")
    class RMSNorm(Norm): ...

    with NORMS.temporary():                    # norms registered inside are gone afterwards
        register_norm("mine")(MyNorm)

    make_norm("RMSNorm", 512, eps=1e-6)        # names are case-insensitive
    make_norm(RMSNorm, 512)                    # a class
    make_norm(functools.partial(RMSNorm, eps=1e-6), 512)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from normlab.norms.base import Norm
from normlab.registry import Registry

N = TypeVar("N", bound=type[Norm])

NORMS: Registry[type[Norm]] = Registry("norm")


def register_norm(name: str) -> Callable[[N], N]:
    """Class decorator: register a `Norm` subclass under `name` (stored lower-case)."""

    def decorator(cls: N) -> N:
        if not (isinstance(cls, type) and issubclass(cls, Norm)):
            raise TypeError(f"register_norm({name!r}) expects a Norm subclass, got {cls!r}")
        if not hasattr(cls, "info"):
            raise TypeError(f"{cls.__name__} must declare `info: NormInfo` to be registered")
        cls.name = NORMS.add(name, cls)
        return cls

    return decorator


def list_norms() -> list[str]:
    """Names of every registered norm, sorted."""
    return sorted(NORMS)


def get_norm_class(name: str) -> type[Norm]:
    """The class registered under `name` (case-insensitive); ValueError lists the known names."""
    return NORMS.lookup(name)


def make_norm(spec: str | type[Norm] | functools.partial, dim: int, **kwargs: Any) -> Norm:
    """Build a norm of width `dim` from a registry name, a `Norm` class or a `functools.partial`.

    Keyword arguments go to the constructor; an argument the method does not take raises a
    TypeError that lists the ones it does.
    """
    if isinstance(spec, str):
        factory: Callable[..., Norm] = get_norm_class(spec)
        cls = factory
    elif isinstance(spec, functools.partial):
        factory, cls = spec, spec.func
    elif isinstance(spec, type) and issubclass(spec, Norm):
        factory = cls = spec
    else:
        raise TypeError(
            f"make_norm: spec must be a norm name, a Norm subclass or a functools.partial, "
            f"got {spec!r}"
        )
    fixed = spec.keywords if isinstance(spec, functools.partial) else {}
    check_norm_kwargs(cls, {**fixed, **kwargs})
    return factory(dim, **kwargs)


def check_norm_kwargs(cls: type[Norm], kwargs: Mapping[str, Any]) -> None:
    """TypeError listing the accepted arguments if `cls.__init__` does not take all of `kwargs`
    (a constructor with **kwargs takes anything), or naming a required one that is missing."""
    params = inspect.signature(cls.__init__).parameters
    label = getattr(cls, "name", "") or cls.__name__
    missing = [
        n for n, p in params.items()
        if p.kind is p.KEYWORD_ONLY and p.default is p.empty and n not in kwargs
    ]
    if missing:
        raise TypeError(f"{label}: missing required argument(s) {', '.join(missing)}")
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [
        n for n, p in params.items() if n not in ("self", "dim") and p.kind is not p.VAR_POSITIONAL
    ]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"{label}: unknown argument(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}"
        )
