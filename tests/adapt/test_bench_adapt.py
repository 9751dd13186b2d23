"""The bench entries: `optim.name`, `optim.trainable` with `model.init_from`, the effective
learning rate in diagnostics.jsonl and the report, and `normlab adapt eval|testtime`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from normlab import cli
from normlab.bench import checkpoint, train
from normlab.bench.config import OptimConfig
from normlab.bench.metrics import read_metrics
from normlab.bench.optim import make_optimizer
from normlab.bench.presets import load_preset
from normlab.bench.report import write_report
from normlab.diagnostics.effective_lr import linear_weights
from normlab.models import GPT, GPTConfig
from normlab.optim import SGDP, AdamP


def smoke(cache, *overrides):
    cfg, _ = load_preset("smoke", ["placement.name=pre", "norm.name=layernorm",
                                   f"data.cache_dir={cache}", *overrides])
    return cfg


def tiny_gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(depth=1, dim=16, heads=2, vocab_size=32, block_size=8))


def tiny_vit(norm="batchnorm"):
    cfg, _ = load_preset("vit-bn", [f"norm.name={norm}", "train.seed=0", "train.steps=4",
                                    "train.eval_every=4", "train.checkpoint_every=4",
                                    "model.depth=1", "model.dim=16"])
    return cfg


@pytest.mark.parametrize(("name", "cls"), [("adamw", torch.optim.AdamW), ("adamp", AdamP),
                                           ("sgdp", SGDP), ("adamw_nap", torch.optim.AdamW)])
def test_optimizer_by_name(name, cls):
    model = tiny_gpt()
    opt = make_optimizer(model, OptimConfig(name=name, lr=1e-2))
    assert type(opt) is cls
    norms = {n: float(p.detach().norm()) for n, p in linear_weights(model).items()}
    idx = torch.randint(0, 32, (4, 8))
    for _ in range(3):
        model(idx, idx)[1].backward()
        opt.step()
        opt.zero_grad()
    after = {n: float(p.detach().norm()) for n, p in linear_weights(model).items()}
    held = all(after[n] == pytest.approx(norms[n], rel=1e-5) for n in norms)
    assert held == (name == "adamw_nap")


def test_no_trainable_parameter_is_refused():
    model = tiny_gpt().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        make_optimizer(model, OptimConfig())


def test_unknown_optimizer_and_part_are_refused(cache_dir):
    with pytest.raises(ValueError, match=r"optim\.name"):
        smoke(cache_dir, "optim.name=lamb")
    with pytest.raises(ValueError, match="unknown or no part"):
        smoke(cache_dir, "optim.trainable=norms+gates")


def test_norm_only_adaptation_through_the_bench(tmp_path, cache_dir):
    source = tmp_path / "source"
    train.run(smoke(cache_dir, "train.steps=6", "train.checkpoint_every=6"), source)
    start = load_file(checkpoint.latest(source) / "model.safetensors")
    adapted = tmp_path / "adapted"
    summary = train.run(smoke(cache_dir, f"model.init_from={source}", "optim.trainable=norms",
                              "train.steps=4", "train.checkpoint_every=4",
                              "optim.weight_decay=0.5"), adapted)
    end = load_file(checkpoint.latest(adapted) / "model.safetensors")
    norms = {k for k in end if ".norm" in k or k.startswith("final_norm")}
    assert norms and summary["trainable_params"] == sum(end[k].numel() for k in norms)
    for key, value in end.items():
        assert torch.equal(value, start[key]) != (key in norms), key
    with pytest.raises(ValueError, match="differs"):
        train.run(smoke(cache_dir, f"model.init_from={source}", "norm.name=rmsnorm"),
                  tmp_path / "other")


def test_effective_lr_in_the_diagnostics_and_the_report(tmp_path, cache_dir):
    runs = tmp_path / "runs"
    for name in ("adamw", "adamw_nap"):
        train.run(smoke(cache_dir, f"optim.name={name}", "train.diagnose_every=4"),
                  runs / "arms" / name)
    records = read_metrics(runs / "arms" / "adamw_nap" / "diagnostics.jsonl")
    assert [r["step"] for r in records] == [4, 8, 12]
    first, last = records[0]["weights"], records[-1]["weights"]
    assert [w["name"] for w in first] == [w["name"] for w in last]
    for a, b in zip(first, last, strict=True):
        assert b["norm"] == pytest.approx(a["norm"], rel=1e-5)  # NaP holds ‖W‖
    metrics = {r["step"]: r["lr"] for r in read_metrics(runs / "arms" / "adamw_nap" /
                                                         "metrics.jsonl") if r["kind"] == "train"}
    assert last[0]["effective_lr"] == pytest.approx(metrics[12] / last[0]["norm"] ** 2)
    table = write_report([runs], tmp_path / "report")
    assert {r["arm"].split(" ")[-1] for r in table["effective_lr"]} == \
        {"[optim.name=adamw]", "[optim.name=adamw_nap]"}
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Effective learning rate" in text and "plots/effective_lr.png" in text
    assert (tmp_path / "report" / "plots" / "effective_lr.png").read_bytes()[:4] == b"\x89PNG"


def test_adapt_eval_and_testtime_commands(tmp_path, cache_dir, capsys):
    source = tmp_path / "source"
    train.run(smoke(cache_dir), source)
    assert cli.main(["adapt", "eval", str(source), "--set", "data.seq_len=16"]) == 0
    result = json.loads(capsys.readouterr().out)
    final = [r for r in read_metrics(source / "metrics.jsonl") if r["kind"] == "eval"][-1]
    assert result["val_loss"] != pytest.approx(final["val_loss"])  # other windows
    assert cli.main(["adapt", "eval", str(source)]) == 0
    assert json.loads(capsys.readouterr().out)["val_loss"] == pytest.approx(final["val_loss"])
    train.run(tiny_vit(), tmp_path / "vit")
    out = tmp_path / "tta.json"
    assert cli.main(["adapt", "testtime", str(tmp_path / "vit"), "--corruption", "blur",
                     "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    cells = {(r["stream"], r["method"]) for r in doc["table"]}
    assert cells == {(s, m) for s in ("iid", "sorted")
                     for m in ("source", "bn", "adabn", "tent", "unmix")}
    assert all(0.0 <= r["acc"] <= 1.0 for r in doc["results"])
    assert cli.main(["adapt", "testtime", str(source)]) == 2  # a GPT run


@pytest.mark.slow
def test_vit_shift_benchmark_runs(tmp_path):
    train.run(tiny_vit("layernorm"), tmp_path / "vit")
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_adapt_vit.py"
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "vit"), "--steps", "2",
                           "--corruption", "blur"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout.splitlines()[-1])["rows"]
    assert [(r["arm"], r["trainable"] > 0) for r in rows] == \
        [("none", False), ("all", True), ("norms", True), ("head", True)]
