"""`normlab quantize` on a bench run and on a HuggingFace folder; bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from quant_models import hf

from normlab import cli


def test_quantize_a_trained_run_after_migration(tmp_path, capsys):
    run = tmp_path / "run"
    sets = [item for o in ("train.steps=4", "train.checkpoint_every=4", "train.eval_every=4",
                           "train.diagnose_every=0", f"data.cache_dir={tmp_path / 'cache'}",
                           "placement.name=pre", "norm.name=rmsnorm")
            for item in ("--set", o)]
    assert cli.main(["train", "--preset", "smoke", "--out", str(run), "--no-progress",
                     *sets]) == 0
    out = tmp_path / "q.json"
    assert cli.main(["quantize", "--run", str(run), "--spec", "W4A8", "--weights", "tensor",
                     "--migrate", "smoothquant", "--batches", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "migrate_scales on normlab GPT" in text and "W4A8 (w:tensor, a:tensor)" in text
    doc = json.loads(out.read_text())
    assert doc["migration"]["max_rel_error"] < 1e-5
    sites = [s["path"] for s in doc["quantization"]["sites"]]
    assert "lm_head" not in sites and "blocks.0.attn.q_proj" in sites
    assert doc["quantization"]["score_quant"] > 0
    # nothing is overwritten
    assert cli.main(["quantize", "--run", str(run), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_quantize_a_hf_folder_and_refuse_post_ln_migration(tmp_path, capsys):
    folder = tmp_path / "gpt2"
    hf("gpt2").save_pretrained(folder)
    assert cli.main(["quantize", "--model", str(folder), "--spec", "W8A8", "--acts", "token",
                     "--batches", "1", "--seq-len", "16"]) == 0
    assert "W8A8 (w:channel, a:token)" in capsys.readouterr().out
    bert = tmp_path / "bert"
    hf("bert").save_pretrained(bert)
    assert cli.main(["quantize", "--model", str(bert), "--migrate", "repq",
                     "--batches", "1", "--seq-len", "16"]) == 2
    assert "also feeds the residual stream" in capsys.readouterr().err
    assert cli.main(["quantize", "--model", str(folder), "--spec", "W9A8"]) == 2
    assert "bit width" in capsys.readouterr().err


@pytest.mark.slow
def test_the_benchmark_script_runs_end_to_end(tmp_path):
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_quantization.py"
    result = subprocess.run(
        [sys.executable, str(script), "--quick", "--only", "gpt", "--norms", "rmsnorm",
         "--steps", "4", "--work", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert {r.get("migration") for r in rows[:-1]} == {"none", "smoothquant", "repq"}
    assert all(float(r["migration_rel_error"]) < 1e-5 for r in rows[:-1]
               if r.get("migration_rel_error"))
