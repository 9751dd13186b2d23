"""The benchmark scripts run end to end (tiny sizes, nothing written to benchmarks/results)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_norm_kernels_on_cuda_takes_gpu_times_over_the_target_hidden_sizes(monkeypatch):
    # No GPU here: do_bench is replaced, to check what the CUDA path asks of it and returns.
    triton_testing = pytest.importorskip("triton.testing")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name, value in importlib.import_module("benchenv").MALLOC_ENV.items():
        monkeypatch.setenv(name, value)  # else importing the script re-executes this process
    bench = importlib.import_module("bench_norm_kernels")
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


def test_norm_kernels(tmp_path):
    csv = tmp_path / "rows.csv"
    out = run("bench_norm_kernels.py", "--shapes", "64x32", "--repeats", "2", "--inner", "1",
              "--warmup", "1", "--csv", str(csv))
    assert "MALLOC_MMAP_THRESHOLD_: 1073741824" in out  # the allocator setting is in force
    assert "nn.LayerNorm" in out and "normlab[torch]" in out
    assert len(csv.read_text().splitlines()) > 1


@pytest.mark.parametrize("script", ["bench_surgery.py", "bench_training_throughput.py"])
def test_quick_runs_print_ratios(script):
    summary = json.loads(run(script, "--quick", "--no-save").strip().splitlines()[-1])
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
