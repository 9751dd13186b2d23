"""The C++ CPU kernels (norm_kernels.cpp), built when normlab is installed, as custom ops.

    normlab_cpu::norm_fwd / norm_bwd / dyt_fwd / dyt_bwd / derf_fwd / derf_bwd / gated_fwd /
    gated_bwd     (signatures: normlab.kernels.op_rules)

The library is compiled by `setup.py` against the installed torch (pip install
--no-build-isolation, as scripts/venv.sh does) and loaded here on first use, never compiled at
import. Without it, or on a CPU without AVX2 when it was built for AVX2, `available()` is False,
`reason()` says why, and the "auto" backend uses the "torch" backend instead.
"""

from __future__ import annotations

from dataclasses import fields
from functools import cache
from pathlib import Path

import torch

from normlab.kernels import op_rules

LIBRARY_STEM = "_norm_kernels"


def library_path() -> Path | None:
    """The built shared library next to this file, if there is one."""
    found = sorted(Path(__file__).parent.glob(f"{LIBRARY_STEM}*.so"))
    return found[0] if found else None


@cache
def _load() -> str | None:
    """Load and register the ops once; None on success, else why not."""
    path = library_path()
    if path is None:
        return (
            "the C++ kernels are not built: reinstall with a C++ compiler "
            "(pip install --no-build-isolation -e .)"
        )
    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        return "the C++ kernels need a CPU with AVX2"
    try:
        torch.ops.load_library(str(path))
        ops = _ops()
    except (OSError, RuntimeError) as err:
        return f"the C++ kernels at {path} do not load ({err}); rebuild them against this torch"
    except AttributeError as err:
        return (f"the C++ kernels at {path} are older than this normlab ({err}); rebuild them "
                f"(pip install --no-build-isolation -e .)")
    # norm_fwd and dyt_fwd carry their autograd rules in C++
    op_rules.register(ops, autograd=("derf_fwd", "gated_fwd"))
    return None


def _ops() -> op_rules.Ops:
    ops = torch.ops.normlab_cpu
    names = [field.name for field in fields(op_rules.Ops)]
    return op_rules.Ops(**{name: getattr(ops, name).default for name in names})


def available() -> bool:
    """True when the C++ kernels are built and loaded."""
    return _load() is None


def reason() -> str:
    """Why the C++ kernels are not available ("" when they are)."""
    return _load() or ""


@cache
def entry_points() -> op_rules.EntryPoints:
    """The entry points over the C++ ops (see `normlab.kernels.op_rules.entry_points`)."""
    problem = _load()
    if problem is not None:
        raise RuntimeError(f"backend='cpp': {problem}; use backend='torch'")
    return op_rules.entry_points(_ops())
