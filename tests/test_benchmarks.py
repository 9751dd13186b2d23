"""The benchmark scripts run end to end (tiny sizes, nothing written to benchmarks/results)."""

from __future__ import annotations

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
