"""The training entry under torchrun: 2 CPU processes, gloo, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from normlab.bench.metrics import read_metrics

ENTRY = Path(__file__).parent / "torchrun_entry.py"


def test_two_process_ddp_run(tmp_path, cache_dir):
    out, logs = tmp_path / "run", tmp_path / "batches"
    logs.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", NORMLAB_BATCH_LOG=str(logs))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(ENTRY), "train", "--preset", "smoke", "--no-progress", "--out", str(out),
           "--set", "placement.name=pre", "--set", "norm.name=layernorm",
           "--set", f"data.cache_dir={cache_dir}", "--set", "train.steps=6",
           "--set", "train.eval_every=3", "--set", "train.checkpoint_every=3"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("sweep axes pinned") == 1  # said by rank 0 only
    records = read_metrics(out / "metrics.jsonl")
    # only rank 0 writes: one record per step, no duplicates
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 7))
    assert [r["step"] for r in records if r["kind"] == "eval"] == [3, 6]
    # the smoke preset records diagnostics at the last step: once, by rank 0
    diagnostics = read_metrics(out / "diagnostics.jsonl")
    assert [r["step"] for r in diagnostics] == [6] and len(diagnostics[0]["blocks"]) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 2
    state = json.loads((out / "checkpoints" / "step_0000006" / "manifest.json").read_text())
    assert state["loop"]["world"] == 2
    rank0 = (logs / "rank0.txt").read_text().split()
    rank1 = (logs / "rank1.txt").read_text().split()
    assert len(rank0) == len(rank1) == 6 and not set(rank0) & set(rank1)


def test_fsdp_run_resumes_exactly(tmp_path, cache_dir):
    out = tmp_path / "fsdp"
    env = dict(os.environ, OMP_NUM_THREADS="1", NORMLAB_BATCH_LOG=str(tmp_path))
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
              "2", str(ENTRY), "train", "--no-progress"]
    # DyT's α and the GPAS gates are 0-d parameters: FSDP2 keeps them whole on every rank
    first = [*launch, "--preset", "smoke", "--out", str(out), "--set", "train.parallel=fsdp",
             "--set", "norm.name=dyt", "--set", "placement.name=gpas",
             "--set", f"data.cache_dir={cache_dir}", "--set", "train.steps=6",
             "--set", "train.eval_every=3", "--set", "train.checkpoint_every=3"]
    result = subprocess.run(first, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    straight = read_metrics(out / "metrics.jsonl")
    diagnosed = read_metrics(out / "diagnostics.jsonl")
    assert [r["step"] for r in diagnosed] == [6]
    # as if killed after step 6 before its checkpoint and summary were written
    (out / "summary.json").unlink()
    (out / "checkpoints" / "latest").write_text("step_0000003")
    result = subprocess.run([*launch, "--resume", str(out)], env=env, capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    resumed = read_metrics(out / "metrics.jsonl")
    keys = ("kind", "step", "loss", "lr", "grad_norm", "val_loss")
    assert [{k: r.get(k) for k in keys} for r in resumed] == [
        {k: r.get(k) for k in keys} for r in straight]
    assert read_metrics(out / "diagnostics.jsonl") == diagnosed
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
