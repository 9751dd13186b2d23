"""Benchmark normlab's norm kernels against PyTorch's layers (and Liger-Kernel on CUDA).

    python benchmarks/bench_norm_kernels.py --threads 2
    python benchmarks/bench_norm_kernels.py --device cuda --compile      # on a GPU machine

For every shape, op and provider it times the forward, the backward alone (from a retained
graph) and forward+backward, the backward computing the gradients of the inputs and of the
parameters as training does (--grads inputs: of the inputs alone, which lets ATen's LayerNorm
skip its parameter sums while a custom op cannot know they are not wanted): the median and
the 10th/90th percentiles over --repeats repeats of --inner calls each. The providers take turns
within each repeat, so that the machine's slow spells hit all of them alike. On CUDA the times
are GPU times from triton.testing.do_bench instead (CUDA events, L2 flushed before each call),
and the default shapes sweep the hidden size from 1024 to 8192. GB/s counts the
bytes an ideal fused kernel must move (forward: read x, write y; backward: read x and dy, write
dx; the residual ops add their extra tensor each way) and is also given as a fraction of the
copy bandwidth measured in the same run. Every time is also given as a ratio to
torch.nn.LayerNorm in the same mode, same run. --providers limits the run to some providers.
Rows are appended to benchmarks/results/norm_kernels.csv.

The ops without a PyTorch layer are timed against their eager formula and, with --compile, its
torch.compile: the zero-centred RMSNorm as Gemma computes it, Derf, and the gated RMSNorm as
Mamba-2 uses it (gate first, 8 groups: group_size = D/8; the gate is a second input like the
residual of the add ops). --compile turns off AOTAutograd's donated buffers
(`torch._functorch.config.donated_buffer`): the "bwd" mode runs backward through one retained
graph again and again, which a backward compiled with donated buffers refuses.

glibc returns freed blocks above 32 MB to the OS by default, so every call that allocates a big
output page-faults it in again; the script re-executes itself with
MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=17179869184 unless they are set.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from benchenv import MALLOC_ENV, cpu_model, use_big_malloc_thresholds

use_big_malloc_thresholds()

import torch  # noqa: E402  (after the re-exec)
import torch._functorch.config as functorch_config  # noqa: E402
from torch import nn  # noqa: E402

from normlab import kernels  # noqa: E402
from normlab.kernels import cpu  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "norm_kernels.csv"
DEFAULT_SHAPES = {
    "cpu": "4096x768,16384x1024",
    "cuda": "16384x1024,16384x2048,16384x4096,16384x8192",
}
MODES = ("fwd", "bwd", "fwd+bwd")


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(fns: dict[str, Callable[[], object]], device: str, repeats: int, inner: int,
            warmup: int) -> dict[str, tuple[float, float, float]]:
    """{name: (median, 10th, 90th percentile)} of the per-call time in ms. On CPU the functions
    take turns within every repeat, so a slow spell of the machine hits all of them alike. On
    CUDA the times are the GPU's own, from `triton.testing.do_bench` (which sets its own warmup
    and repetitions; repeats, inner and warmup apply to CPU only): CUDA events around each call,
    the L2 cache flushed before it. The flush keeps the GPU busy while Python launches the
    call, so the launches overlap GPU work as in a training step; host gaps between the
    kernels of one call still count."""
    if device == "cuda":
        from triton.testing import do_bench

        return {name: tuple(do_bench(fn, quantiles=[0.5, 0.1, 0.9])) for name, fn in fns.items()}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            synchronize(device)
            samples[name].append((time.perf_counter() - start) / inner * 1e3)
    return {name: _summary(times) for name, times in samples.items()}


def _summary(samples: list[float]) -> tuple[float, float, float]:
    samples = sorted(samples)
    pick = lambda q: samples[min(len(samples) - 1, round(q * (len(samples) - 1)))]  # noqa: E731
    return statistics.median(samples), pick(0.1), pick(0.9)


def dyt_eager(x, alpha, weight, bias):
    return weight * torch.tanh(alpha * x) + bias


def derf_eager(x, alpha, shift, weight, bias):
    return weight * torch.erf(alpha * x + shift) + bias


def zero_centered_rms_eager(x, weight, eps: float = 1e-6):
    """Gemma's RMSNorm: in float32, x·rsqrt(mean(x²) + eps)·(1 + w), cast once."""
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (y * (1.0 + weight.float())).type_as(x)


GATED_GROUPS = 8


def gated_rms_eager(x, gate, weight, eps: float = 1e-5):
    """Mamba-2's gated RMSNorm (gate first) over GATED_GROUPS groups, in float32."""
    u = x.float() * nn.functional.silu(gate.float())
    ug = u.unflatten(-1, (GATED_GROUPS, -1))
    y = (ug * torch.rsqrt(ug.square().mean(-1, keepdim=True) + eps)).flatten(-2)
    return (y * weight.float()).type_as(x)


def _eager_and_compiled(out: dict, label: str, fn: Callable, params: list, use_compile: bool):
    out[f"eager {label}"] = (fn, params)
    if use_compile:
        compiled = torch.compile(fn)
        out[f"compile({label})"] = (lambda x, r: compiled(x, r), params)


def providers(op: str, d: int, device: str, dtype, use_compile: bool):
    """name -> (fn(x, r) -> output tuple-or-tensor, the parameters it uses)."""
    kw = {"device": device, "dtype": dtype}
    ln = nn.LayerNorm(d, **kw)
    out: dict[str, tuple[Callable, list]] = {
        "nn.LayerNorm": (lambda x, r: ln(x), [*ln.parameters()])
    }
    if op in ("rms_norm", "add_rms_norm"):
        rms = nn.RMSNorm(d, eps=1e-6, **kw)
        params = [rms.weight]
        w = rms.weight
        if op == "rms_norm":
            out["nn.RMSNorm"] = (lambda x, r: rms(x), params)
            out["F.rms_norm"] = (lambda x, r: nn.functional.rms_norm(x, (d,), w, 1e-6), params)
            if use_compile:
                compiled = torch.compile(rms)
                out["compile(nn.RMSNorm)"] = (lambda x, r: compiled(x), params)
        else:
            add_then_norm = lambda x, r: _then_norm(rms, x + r)  # noqa: E731
            out["x+r, nn.RMSNorm"] = (add_then_norm, params)
            if use_compile:
                out["compile(x+r, nn.RMSNorm)"] = (torch.compile(add_then_norm), params)
    elif op == "layer_norm":
        w, b = ln.weight, ln.bias
        params = [w, b]
        if use_compile:
            compiled = torch.compile(ln)
            out["compile(nn.LayerNorm)"] = (lambda x, r: compiled(x), params)
    elif op == "zero_centered_rms_norm":
        w = nn.Parameter(0.1 * torch.randn(d, **kw))
        params = [w]
        _eager_and_compiled(out, "Gemma RMSNorm", lambda x, r: zero_centered_rms_eager(x, w),
                            params, use_compile)
    elif op == "gated_rms_norm":
        w = nn.Parameter(torch.ones(d, **kw))
        params = [w]
        _eager_and_compiled(out, "gated RMSNorm", lambda x, r: gated_rms_eager(x, r, w), params,
                            use_compile)
    elif op == "derf":
        w = nn.Parameter(torch.ones(d, **kw))
        b = nn.Parameter(torch.zeros(d, **kw))
        alpha = nn.Parameter(torch.full((1,), 0.5, **kw))
        shift = nn.Parameter(torch.zeros(1, **kw))
        params = [alpha, shift, w, b]
        _eager_and_compiled(out, "Derf", lambda x, r: derf_eager(x, alpha, shift, w, b), params,
                            use_compile)
    else:
        w = nn.Parameter(torch.ones(d, **kw))
        b = nn.Parameter(torch.zeros(d, **kw))
        alpha = nn.Parameter(torch.full((1,), 0.5, **kw))
        params = [alpha, w, b]
        _eager_and_compiled(out, "DyT", lambda x, r: dyt_eager(x, alpha, w, b), params,
                            use_compile)
    liger = _liger(op, d, device, dtype)
    if liger is not None:
        out["liger"] = liger
    native = ["triton"] if device == "cuda" else (["cpp"] if cpu.available() else [])
    for name in ["torch", *native, "reference"]:
        if op == "rms_norm":
            fn = lambda x, r, n=name: kernels.rms_norm(x, w, backend=n)  # noqa: E731
        elif op == "add_rms_norm":
            fn = lambda x, r, n=name: kernels.add_rms_norm(x, r, w, backend=n)  # noqa: E731
        elif op == "layer_norm":
            fn = lambda x, r, n=name: kernels.layer_norm(x, w, b, backend=n)  # noqa: E731
        elif op == "zero_centered_rms_norm":
            fn = lambda x, r, n=name: kernels.rms_norm(  # noqa: E731
                x, w, zero_centered=True, backend=n)
        elif op == "gated_rms_norm":
            fn = lambda x, r, n=name: kernels.gated_rms_norm(  # noqa: E731
                x, r, w, d // GATED_GROUPS, backend=n)
        elif op == "derf":
            fn = lambda x, r, n=name: kernels.derf(x, alpha, shift, w, b, backend=n)  # noqa: E731
        else:
            fn = lambda x, r, n=name: kernels.dyt(x, alpha, w, b, backend=n)  # noqa: E731
        out[f"normlab[{name}]"] = (fn, params)
    return out


# Liger-Kernel's module for each op (DyT and the fused add came in later releases than the norms).
LIGER_MODULES = {
    "rms_norm": "LigerRMSNorm",
    "layer_norm": "LigerLayerNorm",
    "dyt": "LigerDyT",
    "add_rms_norm": "LigerFusedAddRMSNorm",
}


def _liger(op: str, d: int, device: str, dtype):
    """Liger-Kernel's provider for `op` on CUDA, if it is installed and has the op."""
    if device != "cuda":
        return None
    try:
        import liger_kernel.transformers as liger
    except ImportError:
        return None
    module = getattr(liger, LIGER_MODULES.get(op, ""), None)
    if module is None:
        return None
    m = module(d).to(device=device, dtype=dtype)
    if op == "add_rms_norm":
        return (lambda x, r: m(x, r)), [*m.parameters()]  # returns (y, x + r)
    return (lambda x, r: m(x)), [*m.parameters()]


def _then_norm(norm: Callable, h):
    return norm(h), h


def timed_calls(fn, params, x, r, args) -> dict[str, Callable[[], object]]:
    """{mode: call} for one provider. The backward computes the gradients of the inputs and,
    with --grads all (the default, as in training), of the parameters too."""
    leaves = [x] + ([r] if r is not None else []) + (params if args.grads == "all" else [])

    def outputs():
        out = fn(x, r)
        return out if isinstance(out, tuple) else (out,)

    grads_out = [torch.randn_like(x) for _ in range(2)]

    def fwd_bwd():
        out = outputs()
        return torch.autograd.grad(out, leaves, grads_out[: len(out)], allow_unused=True)

    saved = outputs()  # the graph that "bwd" runs backward through again and again
    return {
        "fwd": outputs,
        "bwd": lambda: torch.autograd.grad(saved, leaves, grads_out[: len(saved)],
                                           retain_graph=True, allow_unused=True),
        "fwd+bwd": fwd_bwd,
    }


def verdict(op: str, results: dict[str, dict[str, tuple]], native: str) -> str:
    """How many times faster `native` is than the fastest other way to compute `op`, per mode:
    PyTorch eager or compiled, Liger-Kernel (nn.LayerNorm counts only for layer_norm: for the
    other ops it is the reference point, not a way to compute them)."""
    others = [
        name for name in results
        if not name.startswith("normlab[") and (op == "layer_norm" or name != "nn.LayerNorm")
    ]
    if not others:
        return f"{native}: nothing else computes {op} here"
    cells = []
    for mode in MODES:
        best = min(others, key=lambda name: results[name][mode][0])
        speedup = results[best][mode][0] / results[native][mode][0]
        cells.append(f"{mode} x{speedup:.2f} vs {best}")
    return f"{native} speed-up over the fastest other: " + ", ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shapes", default=None,
        help=f"comma-separated MxD (default: {DEFAULT_SHAPES['cpu']} on CPU, hidden sizes "
        f"1024-8192 on CUDA: {DEFAULT_SHAPES['cuda']})",
    )
    parser.add_argument(
        "--ops",
        default="rms_norm,layer_norm,dyt,add_rms_norm,zero_centered_rms_norm,derf,gated_rms_norm",
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=15, help="CPU only, as are the next two")
    parser.add_argument("--inner", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="add torch.compile rows (slow)")
    parser.add_argument(
        "--grads", default="all", choices=["all", "inputs"],
        help="backward computes the parameters' gradients too (all, as in training) or only "
        "the inputs' (inputs: a kernel may then skip its column sums)",
    )
    parser.add_argument(
        "--providers", default=None,
        help="comma-separated provider names to time (nn.LayerNorm, the baseline, always runs)",
    )
    parser.add_argument("--csv", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compile:
        functorch_config.donated_buffer = False  # "bwd" reruns one retained graph
    dtype = getattr(torch, args.dtype)
    device = args.device
    env = {
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_model(),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        **{k: os.environ[k] for k in MALLOC_ENV},
    }
    print("# bench_norm_kernels", datetime.datetime.now().isoformat(timespec="seconds"))
    for k, v in env.items():
        print(f"# {k}: {v}")
    print("# (MALLOC_* set by this script: big outputs are not page-faulted in on every call)")
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    rows = []
    elt = torch.finfo(dtype).bits // 8
    for shape in (args.shapes or DEFAULT_SHAPES[device]).split(","):
        m, d = (int(v) for v in shape.lower().split("x"))
        torch.manual_seed(0)
        x0 = torch.randn(m, d, device=device, dtype=dtype)
        copy_dst = torch.empty_like(x0)
        copy = {"copy": lambda dst=copy_dst, src=x0: dst.copy_(src)}
        copy_ms = measure(copy, device, args.repeats, args.inner, args.warmup)["copy"][0]
        copy_gbs = 2 * x0.numel() * elt / copy_ms / 1e6
        print(f"\n## shape {m}x{d} {args.dtype}: copy {copy_ms:.3f} ms = {copy_gbs:.1f} GB/s")
        for op in args.ops.split(","):
            x = x0.clone().requires_grad_()
            second = op.startswith("add_") or op == "gated_rms_norm"  # the residual, the gate
            r = torch.randn_like(x0).requires_grad_() if second else None
            tensors = {"fwd": 2, "bwd": 3, "fwd+bwd": 5}
            # the residual: read, h written, dh added; the gate: read, read again, dz written
            extra = ({"fwd": 2, "bwd": 1, "fwd+bwd": 3} if op.startswith("add_") else
                     {"fwd": 1, "bwd": 2, "fwd+bwd": 3} if second else dict.fromkeys(MODES, 0))
            chosen = providers(op, d, device, dtype, args.compile)
            if args.providers:
                keep = {"nn.LayerNorm", *args.providers.split(",")}
                chosen = {name: p for name, p in chosen.items() if name in keep}
            calls = {
                name: timed_calls(fn, params, x, r, args) for name, (fn, params) in chosen.items()
            }
            results = {name: {} for name in calls}
            for mode in MODES:
                timed = measure({name: c[mode] for name, c in calls.items()}, device,
                                args.repeats, args.inner, args.warmup)
                for name, stats in timed.items():
                    results[name][mode] = stats
            base = results["nn.LayerNorm"]
            print(f"\n{op:14s} {'provider':22s} " + " ".join(f"{mo:>24s}" for mo in MODES))
            for name, res in results.items():
                cells = []
                for mode in MODES:
                    med, lo, hi = res[mode]
                    gbs = (tensors[mode] + extra[mode]) * x0.numel() * elt / med / 1e6
                    ratio = med / base[mode][0]
                    cells.append(f"{med:7.3f} [{lo:6.3f},{hi:6.3f}] x{ratio:4.2f}")
                    rows.append({
                        "time": stamp, **env, "dtype": args.dtype, "shape": f"{m}x{d}", "op": op,
                        "grads": args.grads,
                        "provider": name, "mode": mode, "median_ms": f"{med:.4f}",
                        "p10_ms": f"{lo:.4f}", "p90_ms": f"{hi:.4f}", "gb_per_s": f"{gbs:.2f}",
                        "frac_of_copy": f"{gbs / copy_gbs:.3f}",
                        "ratio_vs_nn_layernorm": f"{ratio:.3f}",
                    })
                print(f"{'':14s} {name:22s} " + " ".join(cells))
            native = f"normlab[{'triton' if device == 'cuda' else 'cpp'}]"
            if native in results:
                print(f"{'':14s} {verdict(op, results, native)}")
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    new = not args.csv.exists()
    with args.csv.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)
    print(f"\n# {len(rows)} rows appended to {args.csv}")
    print("# cells: median ms [p10, p90] xratio to nn.LayerNorm in the same mode")


if __name__ == "__main__":
    main()
