"""Which implementation a kernel call runs: the backend names and how one is chosen.

Precedence, highest first:

1. the `backend=` argument of a call (anything but None);
2. the innermost `use_backend(...)` context (tests force a backend with it);
3. the environment variable `NORMLAB_KERNEL_BACKEND`, read at every call;
4. "auto".

"auto" picks "triton" for CUDA tensors when Triton can be imported (and the call is one the
Triton kernels cover), "cpp" for CPU tensors when the C++ kernels are built (except plain
LayerNorm, where ATen's kernel is as fast), else "torch".
Nothing here imports Triton: `triton_available()` only looks for the package.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from functools import cache
from typing import Literal

Backend = Literal["auto", "torch", "cpp", "triton", "reference"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "cpp", "triton", "reference")
ENV_VAR = "NORMLAB_KERNEL_BACKEND"

_forced: list[str] = []


def check_backend(name: str) -> str:
    """`name` lower-cased if it is a backend name, else a ValueError listing the names."""
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name.lower()


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the calls inside the block on backend `name` unless a call names its own."""
    _forced.append(check_backend(name))
    try:
        yield
    finally:
        _forced.pop()


def requested_backend(backend: str | None) -> str:
    """The backend asked for, before "auto" is resolved (argument > context > env > auto)."""
    if backend is not None:
        return check_backend(backend)
    if _forced:
        return _forced[-1]
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        try:
            return check_backend(env)
        except ValueError as err:
            raise ValueError(f"{ENV_VAR}={env!r}: {err}") from None
    return "auto"


@cache
def triton_available() -> bool:
    """True when the `triton` package is installed (it is not imported here)."""
    return importlib.util.find_spec("triton") is not None


def triton_interpreted() -> bool:
    """True when Triton kernels run in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
