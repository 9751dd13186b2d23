"""Builds normlab's C++ CPU kernels (src/normlab/kernels/cpu/norm_kernels.cpp) against the
installed torch. Everything else is in pyproject.toml.

The build needs torch importable, so install with `pip install --no-build-isolation` after torch
(scripts/venv.sh does). Without torch or a C++ compiler normlab installs without the kernels and
`normlab.kernels` falls back to its pure-PyTorch backend.
"""

from __future__ import annotations

import platform
from pathlib import Path

from setuptools import setup

SOURCE = "src/normlab/kernels/cpu/norm_kernels.cpp"


def _host_has_avx2() -> bool:
    try:
        return "avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _extensions() -> tuple[list, dict]:
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        return [], {}
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return [], {}
    # -fopenmp: ATen's parallel_for is OpenMP pragmas in the headers; the library then uses the
    # libgomp that torch already loaded. -fno-trapping-math lets GCC vectorize the selects.
    flags = ["-O3", "-fopenmp", "-fno-trapping-math"]
    if _host_has_avx2():
        flags += ["-mavx2", "-mfma"]
    extension = CppExtension(
        "normlab.kernels.cpu._norm_kernels",
        [SOURCE],
        extra_compile_args=flags,
        extra_link_args=["-fopenmp", "-lmvec"],
        py_limited_api=False,
        optional=True,
    )
    return [extension], {"build_ext": BuildExtension.with_options(no_python_abi_suffix=True)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
