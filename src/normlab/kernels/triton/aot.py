"""Ahead-of-time builds of the Triton kernels for a CUDA GPU, on any machine, and what they cost.

Triton lowers a kernel to PTX and its bundled `ptxas` assembles the PTX for a GPU
architecture; neither step needs a GPU. A build here is the one `ops` launches on CUDA: the
same row block and `launch_options`, and the specialization Triton's launcher applies to the
arguments (pointers, and integers that are multiples of 16, marked 16-byte aligned). It tells,
before the kernel ever runs, two things that decide whether a memory-bound kernel can reach
the bandwidth limit:

* registers per thread, and the bytes a thread spills to local memory (spilled values cost
  extra memory traffic on every row);
* the global loads and stores, and how many of them are narrow, i.e. not 128-bit vectors
  (`ld.global.v4`). Per-row scalars (mean, rstd, α) are narrow by nature; a row that is read
  or written narrow moves a quarter of the bytes per instruction.

    python -m normlab.kernels.triton.aot [--arch 90] [--dims 1024,2048,4096,8192]
        [--dtypes float32,bfloat16] [--all-variants] [--json]

The kernels must be compiled ones: run it with TRITON_INTERPRET unset.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import itertools
import json
import re
import sys
from collections.abc import Iterator

import triton
from rich.console import Console
from rich.table import Table
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from normlab.kernels.backend import triton_interpreted
from normlab.kernels.triton import kernels as K

KERNELS = {
    "norm_fwd": K.norm_fwd_kernel,
    "norm_bwd": K.norm_bwd_kernel,
    "dyt_fwd": K.dyt_fwd_kernel,
    "dyt_bwd": K.dyt_bwd_kernel,
    "derf_fwd": K.derf_fwd_kernel,
    "derf_bwd": K.derf_bwd_kernel,
}
TRITON_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
# Pointer arguments that are float32 whatever the activations' dtype.
_FLOAT32_BUFFERS = {"MEAN", "RSTD", "DA_PART", "DS_PART", "DW_PART", "DB_PART"}


@dataclasses.dataclass(frozen=True)
class Build:
    """One kernel built for one GPU architecture, dtype and hidden size."""

    kernel: str
    flags: str  # the constexpr switches that are on, e.g. "HAS_RES+HAS_W+HAS_B"
    dtype: str
    dim: int
    block: int
    num_warps: int
    registers: int  # per thread
    spill_bytes: int  # stored to local memory per thread
    loads: int  # global load instructions
    narrow_loads: int  # of which not 128-bit vectors
    stores: int
    narrow_stores: int


def _require_compiled() -> None:
    if triton_interpreted():
        raise RuntimeError("unset TRITON_INTERPRET: interpreted kernels cannot be compiled")


def switches(kernel: str) -> list[str]:
    """The kernel's constexpr on/off switches (every constexpr but BLOCK)."""
    return [p.name for p in KERNELS[kernel].params if p.is_constexpr and p.name != "BLOCK"]


def variants(kernel: str, every: bool) -> list[dict[str, bool]]:
    """Switch settings to build: every combination, or the fullest ones (every HAS_* on, for
    both IS_RMS values where the kernel has it)."""
    names = switches(kernel)
    if every:
        return [dict(zip(names, on, strict=True))
                for on in itertools.product((False, True), repeat=len(names))]
    rms_values = (False, True) if "IS_RMS" in names else (None,)
    return [{n: (rms if n == "IS_RMS" else True) for n in names} for rms in rms_values]


def _signature(kernel: str, dtype: str) -> dict[str, str]:
    """Triton's type for each argument as `ops` passes it: activation pointers in `dtype`
    (parameters too: a model cast to that dtype), float32 buffers, eps a float, ints i32."""
    types = {}
    for p in KERNELS[kernel].params:
        if p.is_constexpr:
            types[p.name] = "constexpr"
        elif p.name in _FLOAT32_BUFFERS:
            types[p.name] = "*fp32"
        elif p.name.isupper():
            types[p.name] = f"*{TRITON_DTYPES[dtype]}"
        else:
            types[p.name] = "fp32" if p.name == "eps" else "i32"
    return types


def _aligned(kernel: str, types: dict[str, str], dim: int) -> dict[tuple[int], list[list]]:
    """The launcher's specialization: every pointer (tensors are 16-byte aligned) and n_cols
    when dim is a multiple of 16 (row counts vary from call to call and are left unmarked)."""
    names = [p.name for p in KERNELS[kernel].params]
    return {
        (i,): [["tt.divisibility", 16]]
        for i, name in enumerate(names)
        if types[name].startswith("*") or (name == "n_cols" and dim % 16 == 0)
    }


@contextlib.contextmanager
def _ptxas_log() -> Iterator[io.StringIO]:
    """Make Triton print ptxas's resource report (compiling even what it has cached)."""
    nvidia, compilation = triton.knobs.nvidia, triton.knobs.compilation
    saved = nvidia.dump_ptxas_log, compilation.always_compile
    nvidia.dump_ptxas_log, compilation.always_compile = True, True
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            yield log
    finally:
        nvidia.dump_ptxas_log, compilation.always_compile = saved


def _count(pattern: str, text: str) -> int:
    return len(re.findall(pattern, text, flags=re.MULTILINE))


def build(kernel: str, flags: dict[str, bool], dtype: str, dim: int, arch: int = 90) -> Build:
    """Compile `kernel` for sm_`arch` as `ops` launches it on rows of `dim` channels."""
    _require_compiled()
    block = K.block_size(dim)
    options = K.launch_options(block)
    types = _signature(kernel, dtype)
    source = ASTSource(
        fn=KERNELS[kernel], signature=types, constexprs={**flags, "BLOCK": block},
        attrs=_aligned(kernel, types, dim),
    )
    with _ptxas_log() as log:
        compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    report, ptx = log.getvalue(), compiled.asm["ptx"]
    registers = re.search(r"Used (\d+) registers", report)
    spills = re.search(r"(\d+) bytes spill stores", report)
    if registers is None or spills is None:
        raise RuntimeError(f"no resource report from ptxas for {kernel}:\n{report}")
    access = r"^\s*(?:@!?%p\d+\s+)?{}\.global\S*"
    return Build(
        kernel=kernel, flags="+".join(n for n, on in flags.items() if on) or "-", dtype=dtype,
        dim=dim, block=block, num_warps=options["num_warps"],
        registers=int(registers.group(1)), spill_bytes=int(spills.group(1)),
        loads=_count(access.format("ld"), ptx),
        narrow_loads=_count(access.format("ld") + r"(?<!\.v4\.b32)\s", ptx),
        stores=_count(access.format("st"), ptx),
        narrow_stores=_count(access.format("st") + r"(?<!\.v4\.b32)\s", ptx),
    )


def build_all(dims: list[int], dtypes: list[str], every_variant: bool = False,
              arch: int = 90) -> list[Build]:
    """Every kernel × switch setting × dtype × hidden size."""
    _require_compiled()
    return [
        build(kernel, flags, dtype, dim, arch)
        for kernel in KERNELS
        for flags in variants(kernel, every_variant)
        for dtype in dtypes
        for dim in dims
    ]


def _table(builds: list[Build], arch: int) -> Table:
    view = Table(title=f"normlab Triton kernels built for sm_{arch}")
    columns = [f.name for f in dataclasses.fields(Build)]
    for column in columns:
        view.add_column(column)
    for b in builds:
        view.add_row(*(str(getattr(b, c)) for c in columns))
    return view


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m normlab.kernels.triton.aot",
        description="Build the Triton kernels for a CUDA GPU (no GPU needed) and report "
                    "registers, spills and vector accesses.",
    )
    parser.add_argument("--arch", type=int, default=90, help="compute capability: 80, 90, ...")
    parser.add_argument("--dims", default="1024,2048,4096,8192", help="hidden sizes")
    parser.add_argument("--dtypes", default="float32,bfloat16",
                        help=f"comma-separated, of {', '.join(TRITON_DTYPES)}")
    parser.add_argument("--all-variants", action="store_true",
                        help="every combination of each kernel's switches, not only the fullest")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    args = parser.parse_args(argv)
    dtypes = args.dtypes.split(",")
    unknown = sorted(set(dtypes) - set(TRITON_DTYPES))
    if unknown:
        parser.error(f"unknown dtype {', '.join(unknown)}; choose from {', '.join(TRITON_DTYPES)}")
    dims = [int(d) for d in args.dims.split(",")]
    builds = build_all(dims, dtypes, args.all_variants, args.arch)
    if args.json:
        for b in builds:
            print(json.dumps(dataclasses.asdict(b)))
    else:
        Console(width=200).print(_table(builds, args.arch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
