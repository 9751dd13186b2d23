"""The benchmark scripts run end to end (tiny sizes, nothing written to benchmarks/results)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import types
from csv import DictReader
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def bench(monkeypatch):
    """bench_norm_kernels imported into this process."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name, value in importlib.import_module("benchenv").MALLOC_ENV.items():
        monkeypatch.setenv(name, value)  # else importing the script re-executes this process
    return importlib.import_module("bench_norm_kernels")


def test_norm_kernels_on_cuda_takes_gpu_times_over_the_target_hidden_sizes(monkeypatch, bench):
    # No GPU here: do_bench is replaced, to check what the CUDA path asks of it and returns.
    triton_testing = pytest.importorskip("triton.testing")
    timed = []

    def do_bench(fn, quantiles):
        timed.append(fn)
        return [2.0 * len(timed), 1.0, 3.0] if quantiles == [0.5, 0.1, 0.9] else None

    monkeypatch.setattr(triton_testing, "do_bench", do_bench)
    fns = {"a": lambda: None, "b": lambda: None}
    out = bench.measure(fns, "cuda", repeats=5, inner=2, warmup=1)
    assert out == {"a": (2.0, 1.0, 3.0), "b": (4.0, 1.0, 3.0)}
    assert timed == [fns["a"], fns["b"]]
    hidden = {int(s.split("x")[1]) for s in bench.DEFAULT_SHAPES["cuda"].split(",")}
    assert min(hidden) == 1024 and max(hidden) == 8192


def test_verdict_compares_with_the_fastest_other_provider(bench):
    times = {  # fwd, bwd, fwd+bwd medians
        "nn.LayerNorm": (1.0, 1.0, 2.0), "nn.RMSNorm": (4.0, 8.0, 12.0),
        "compile(nn.RMSNorm)": (2.0, 4.0, 6.0), "liger": (3.0, 2.0, 5.0),
        "normlab[triton]": (1.0, 2.5, 4.0), "normlab[torch]": (0.5, 0.5, 1.0),
    }
    results = {name: {mode: (t, t, t) for mode, t in zip(bench.MODES, ts, strict=True)}
               for name, ts in times.items()}
    line = bench.verdict("rms_norm", results, "normlab[triton]")
    assert line.endswith("fwd x2.00 vs compile(nn.RMSNorm), bwd x0.80 vs liger, "
                         "fwd+bwd x1.25 vs liger")
    # nn.LayerNorm is a competitor only for layer_norm
    assert "fwd x1.00 vs nn.LayerNorm" in bench.verdict("layer_norm", results, "normlab[triton]")


class _FakeLiger(torch.nn.Module):
    """Stands in for a Liger-Kernel module: records its class and hidden size."""

    def __init__(self, hidden_size):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(hidden_size))

    def to(self, device=None, dtype=None):  # no CUDA here
        return self

    def forward(self, *inputs):
        return (type(self).__name__, *inputs)


@pytest.mark.parametrize("op, module", [
    ("rms_norm", "LigerRMSNorm"), ("layer_norm", "LigerLayerNorm"), ("dyt", "LigerDyT"),
    ("add_rms_norm", "LigerFusedAddRMSNorm"),
])
def test_liger_provides_each_op_on_cuda(monkeypatch, bench, op, module):
    transformers = types.ModuleType("liger_kernel.transformers")
    for name in bench.LIGER_MODULES.values():
        setattr(transformers, name, type(name, (_FakeLiger,), {}))
    monkeypatch.setitem(sys.modules, "liger_kernel", types.ModuleType("liger_kernel"))
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", transformers)
    assert bench._liger(op, 8, "cpu", torch.float32) is None
    fn, params = bench._liger(op, 8, "cuda", torch.float32)
    # the fused add takes the residual too and returns (y, x + r)
    assert fn("x", "r") == ((module, "x", "r") if op == "add_rms_norm" else (module, "x"))
    assert [p.shape for p in params] == [(8,)]
    delattr(transformers, module)  # an older release without the op
    assert bench._liger(op, 8, "cuda", torch.float32) is None


def test_compile_rows_for_every_op(bench):
    for op, name in [("rms_norm", "compile(nn.RMSNorm)"), ("layer_norm", "compile(nn.LayerNorm)"),
                     ("dyt", "compile(DyT)"), ("add_rms_norm", "compile(x+r, nn.RMSNorm)"),
                     ("zero_centered_rms_norm", "compile(Gemma RMSNorm)"),
                     ("derf", "compile(Derf)"), ("gated_rms_norm", "compile(gated RMSNorm)")]:
        assert name in bench.providers(op, 8, "cpu", torch.float32, use_compile=True)
        assert name not in bench.providers(op, 8, "cpu", torch.float32, use_compile=False)


def test_norm_kernels(tmp_path):
    csv = tmp_path / "rows.csv"
    out = run("bench_norm_kernels.py", "--shapes", "64x32", "--repeats", "2", "--inner", "1",
              "--warmup", "1", "--csv", str(csv))
    assert "MALLOC_MMAP_THRESHOLD_: 1073741824" in out  # the allocator setting is in force
    assert "nn.LayerNorm" in out and "normlab[torch]" in out
    assert len(csv.read_text().splitlines()) > 1


def test_new_ops_eager_forms_are_their_formulas(bench):
    # the eager forms the kernels are timed against compute what normlab's reference does
    torch.manual_seed(0)
    x, z = torch.randn(2, 5, 16).unbind(0)
    w = torch.randn(16)
    a, s = torch.tensor([0.7]), torch.tensor([0.2])
    from normlab import functional as F

    torch.testing.assert_close(bench.zero_centered_rms_eager(x, w),
                               F.rms_norm(x, F.zero_centered_gain(w), 1e-6))
    torch.testing.assert_close(bench.derf_eager(x, a, s, w, w), F.derf(x, a, s, w, w))
    torch.testing.assert_close(bench.gated_rms_eager(x, z, w),
                               F.gated_rms_norm(x, z, w, 16 // bench.GATED_GROUPS))


@pytest.mark.slow
def test_compile_rows_run_at_every_shape(tmp_path):
    # the "bwd" mode reruns one retained graph; compiled with donated buffers (the second
    # shape's dynamic recompile) that backward used to refuse
    csv = tmp_path / "rows.csv"
    run("bench_norm_kernels.py", "--shapes", "64x32,128x64", "--ops", "rms_norm,derf",
        "--repeats", "1", "--inner", "1", "--warmup", "0", "--compile",
        "--providers", "compile(nn.RMSNorm),compile(Derf)", "--csv", str(csv))
    with csv.open() as fh:
        cells = {(r["shape"], r["provider"], r["mode"]) for r in DictReader(fh)}
    for shape in ("64x32", "128x64"):
        for provider in ("compile(nn.RMSNorm)", "compile(Derf)"):
            assert {(shape, provider, mode) for mode in ("fwd", "bwd", "fwd+bwd")} <= cells


@pytest.mark.parametrize("command", [["bench_surgery.py"], ["bench_training_throughput.py"],
                                     ["bench_training_throughput.py", "--model", "llama"]])
def test_quick_runs_print_ratios(command):
    summary = json.loads(run(*command, "--quick", "--no-save").strip().splitlines()[-1])
    assert summary and all(v > 0 for v in summary.values())


def test_norm_kernels_keeps_the_baseline_and_the_chosen_providers(tmp_path):
    csv = tmp_path / "rows.csv"
    run("bench_norm_kernels.py", "--shapes", "16x8", "--ops", "dyt", "--repeats", "1",
        "--inner", "1", "--warmup", "0", "--providers", "normlab[torch]", "--csv", str(csv))
    providers = {line.split(",")[11] for line in csv.read_text().splitlines()[1:]}
    assert providers == {"nn.LayerNorm", "normlab[torch]"}


def test_step_share_prints_fractions_of_a_step():
    out = run("bench_step_share.py", "--steps", "1")
    lines = [line for line in out.splitlines() if "step" in line and "%" in line]
    assert [line.split()[0] for line in lines] == ["layernorm", "rmsnorm"]
    for line in lines:
        fractions = [float(v.rstrip("%")) for v in line.split() if v.endswith("%")]
        assert len(fractions) == 2 and all(0 < f < 100 for f in fractions)
