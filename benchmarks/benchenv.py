"""What every benchmark script shares: glibc allocator settings and the CPU model.

glibc returns freed blocks above 32 MB to the OS by default, so every call that allocates a big
output page-faults it in again; `use_big_malloc_thresholds()` re-executes the script with
MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=17179869184 unless they are set. Call it
before importing torch.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "1073741824", "MALLOC_TRIM_THRESHOLD_": "17179869184"}


def use_big_malloc_thresholds() -> None:
    """Re-execute this process with MALLOC_ENV in its environment, once."""
    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
