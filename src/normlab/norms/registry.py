"""The norm registry: `register_norm`, `make_norm`, `list_norms`.

    @register_norm("rmsnorm")
    class RMSNorm(Norm): ...

    make_norm("RMSNorm", 512, eps=1e-6)        # names are case-insensitive
    make_norm(RMSNorm, 512)                    # a class
    make_norm(functools.partial(RMSNorm, eps=1e-6), 512)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from normlab.norms.base import Norm

N = TypeVar("N", bound=type[Norm])

_REGISTRY: dict[str, type[Norm]] = {}


def register_norm(name: str) -> Callable[[N], N]:
    """Class decorator: register a `Norm` subclass under `name` (stored lower-case)."""
    key = name.lower()

    def decorator(cls: N) -> N:
        if not (isinstance(cls, type) and issubclass(cls, Norm)):
            raise TypeError(f"register_norm({name!r}) expects a Norm subclass, got {cls!r}")
        if not hasattr(cls, "info"):
            raise TypeError(f"{cls.__name__} must declare `info: NormInfo` to be registered")
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise ValueError(f"a norm named {key!r} is already registered ({_REGISTRY[key]})")
        cls.name = key
        _REGISTRY[key] = cls
        return cls

    return decorator


def list_norms() -> list[str]:
    """Names of every registered norm, sorted."""
    return sorted(_REGISTRY)


def get_norm_class(name: str) -> type[Norm]:
    """The class registered under `name` (case-insensitive); ValueError lists the known names."""
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown norm {name!r}; known norms: {', '.join(list_norms())}"
        ) from None


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
    _check_kwargs(cls, kwargs)
    return factory(dim, **kwargs)


def _check_kwargs(cls: Any, kwargs: dict[str, Any]) -> None:
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [
        n for n, p in params.items() if n not in ("self", "dim") and p.kind is not p.VAR_POSITIONAL
    ]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        label = getattr(cls, "name", "") or cls.__name__
        raise TypeError(
            f"{label}: unknown argument(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}"
        )
