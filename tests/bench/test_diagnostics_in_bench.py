"""`train.diagnose_every`: diagnostics recorded during training, and the report section on them."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from normlab import cli
from normlab.bench import checkpoint, train
from normlab.bench.config import TrainConfig
from normlab.bench.data import load_data
from normlab.bench.diagnostics import due
from normlab.bench.metrics import read_metrics
from normlab.bench.presets import load_preset
from normlab.bench.report import write_report
from normlab.norms import Norm

DETERMINISTIC = ("kind", "step", "loss", "lr", "grad_norm", "val_loss", "val_acc")
PNG = b"\x89PNG\r\n\x1a\n"


def smoke(cache, *overrides):
    cfg, _ = load_preset("smoke", ["placement.name=pre", "norm.name=layernorm",
                                   f"data.cache_dir={cache}", "train.diagnose_every=7",
                                   *overrides])
    return cfg


def comparable(path):
    return [{k: r[k] for k in DETERMINISTIC if k in r} for r in read_metrics(path)]


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three smoke runs of 12 steps: pre/layernorm and post/rmsnorm recording at steps 7 and
    12, and pre/layernorm with the diagnostics off."""
    cache = tmp_path_factory.getbasetemp() / "corpus-cache"
    root = tmp_path_factory.mktemp("diagnosed")
    configs = {"pre": smoke(cache),
               "post": smoke(cache, "placement.name=post", "norm.name=rmsnorm"),
               "off": smoke(cache, "train.diagnose_every=0")}
    for name, cfg in configs.items():
        assert train.run(cfg, root / name)["status"] == "completed"
    return {name: (root / name, cfg) for name, cfg in configs.items()}


def test_diagnose_every_is_a_checked_field_on_in_quick_and_smoke():
    assert TrainConfig().diagnose_every == 0
    cfg, _ = load_preset("smoke", ["train.diagnose_every=3"])
    assert cfg.train.diagnose_every == 3
    for bad in ("-1", "1.5", "true", "often"):
        with pytest.raises(ValueError, match=r"train\.diagnose_every"):
            load_preset("smoke", [f"train.diagnose_every={bad}"])
    for preset in ("quick", "smoke"):
        cfg, _ = load_preset(preset)
        assert 0 < cfg.train.diagnose_every <= cfg.train.steps


@pytest.mark.parametrize("every, steps", [(5, [5, 10, 12]), (6, [6, 12]), (20, [12]), (0, [])])
def test_due_every_n_steps_and_at_the_last(every, steps):
    cfg = TrainConfig(steps=12, diagnose_every=every)
    assert [done for done in range(1, 13) if due(done, cfg)] == steps


def test_recording_leaves_the_training_unchanged(runs):
    (on, _), (off, _) = runs["pre"], runs["off"]
    records = read_metrics(on / "diagnostics.jsonl")
    assert [r["step"] for r in records] == [7, 12]
    assert not (off / "diagnostics.jsonl").exists()
    assert comparable(on / "metrics.jsonl") == comparable(off / "metrics.jsonl")  # exact
    final_on = load_file(checkpoint.latest(on) / "model.safetensors")
    final_off = load_file(checkpoint.latest(off) / "model.safetensors")
    assert all(final_on[k].equal(final_off[k]) for k in final_on)
    first = records[0]
    assert [b["name"] for b in first["blocks"]] == ["blocks.0", "blocks.1"]
    assert {n["kind"] for n in first["norms"]} == {"layernorm"}
    assert set(first["blocks"][0]) == {"index", "name", "input", "output", "angular_distance",
                                       "grad", "max_attention_logit"}
    assert all(math.isfinite(b["max_attention_logit"]) for b in first["blocks"])


def _moments(x):
    x = x.detach().double()
    mean = x.mean()
    return {"mean": mean.item(), "variance": (x - mean).square().mean().item(),
            "rms": x.square().mean().sqrt().item()}


def _angular(x, y):
    a, b = x.detach().double().flatten(0, -2), y.detach().double().flatten(0, -2)
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    return (torch.arccos(cos.clamp(-1, 1)) / math.pi).mean().item()


def test_record_matches_a_recomputation_of_that_step(runs):
    """Step 7's record against step 7 redone from the step-6 checkpoint, measured by hand."""
    run_dir, cfg = runs["pre"]
    record = read_metrics(run_dir / "diagnostics.jsonl")[0]
    model = train.build_model(cfg)
    ckpt = checkpoint.load(run_dir / "checkpoints" / "step_0000006", config=cfg.to_dict(),
                           expected=model.state_dict())
    model.load_state_dict(ckpt.model)
    generator = torch.Generator()
    generator.set_state(ckpt.tensors["data.generator.0"])
    inputs, targets = load_data(cfg.data).train_batch(generator)
    seen, out_grads = {}, {}
    norm_name, norm = next((n, m) for n, m in model.named_modules() if isinstance(m, Norm)
                           and n.startswith("blocks.0."))
    for i, block in enumerate(model.blocks):
        def keep(module, args, output, i=i):
            seen[i] = (args[0], output)
            output.register_hook(lambda g: out_grads.__setitem__(i, g))
        block.register_forward_hook(keep)
    norm.register_forward_hook(lambda m, args, output: seen.__setitem__("norm", (args[0], output)))
    model.train()
    _, loss = model(inputs, targets)
    loss.backward()

    step7 = next(r for r in read_metrics(run_dir / "metrics.jsonl")
                 if r["kind"] == "train" and r["step"] == 7)
    assert loss.item() == pytest.approx(step7["loss"], rel=1e-6)
    for i, block in enumerate(model.blocks):
        got = record["blocks"][i]
        x, y = seen[i]
        for key, value in _moments(y).items():
            assert got["output"][key] == pytest.approx(value, rel=1e-6, abs=1e-12)
        for key, value in _moments(x).items():
            assert got["input"][key] == pytest.approx(value, rel=1e-6, abs=1e-12)
        assert got["angular_distance"] == pytest.approx(_angular(x, y), rel=1e-6)
        grad = math.sqrt(sum(p.grad.double().square().sum().item() for p in block.parameters()))
        assert got["grad"]["params"] == pytest.approx(grad, rel=1e-5)
        token_norm = out_grads[i].double().norm(dim=-1).mean().item()
        assert got["grad"]["output_token_norm"] == pytest.approx(token_norm, rel=1e-6)
    entry = next(n for n in record["norms"] if n["name"] == norm_name)
    for side, tensor in zip(("input", "output"), seen["norm"], strict=True):
        for key, value in _moments(tensor).items():
            assert entry[side][key] == pytest.approx(value, rel=1e-6, abs=1e-12)


def test_resume_records_exactly_what_the_uninterrupted_run_did(runs, tmp_path):
    straight, cfg = runs["pre"]

    def kill_at_10(step, record):  # after the recording at 7, past the checkpoint at 6
        if step == 10:
            raise Interrupt

    with pytest.raises(Interrupt):
        train.run(cfg, tmp_path / "resumed", on_step=kill_at_10)
    assert [r["step"] for r in read_metrics(tmp_path / "resumed" / "diagnostics.jsonl")] == [7]
    train.run(cfg, tmp_path / "resumed", resume=True)
    assert (read_metrics(tmp_path / "resumed" / "diagnostics.jsonl")
            == read_metrics(straight / "diagnostics.jsonl"))
    assert comparable(tmp_path / "resumed" / "metrics.jsonl") == comparable(
        straight / "metrics.jsonl")


def test_report_shows_what_normalization_did_from_the_json_alone(runs, tmp_path):
    dirs = [runs["pre"][0], runs["post"][0]]
    out = tmp_path / "report"
    table = write_report(dirs, out)
    by_arm = {row["arm"]: row for row in table["normalization"]}
    assert set(by_arm) == {"pre/layernorm", "post/rmsnorm"}
    assert by_arm["pre/layernorm"]["baseline"] and not by_arm["post/rmsnorm"]["baseline"]
    markdown = (out / "report.md").read_text()
    assert "## What normalization did" in markdown
    assert "![normalization](plots/normalization.png)" in markdown
    assert "**`pre/layernorm`** (baseline)" in markdown
    for arm, run_dir in zip(("pre/layernorm", "post/rmsnorm"), dirs, strict=True):
        last = json.loads((run_dir / "diagnostics.jsonl").read_text().splitlines()[-1])
        variance = [last["blocks"][0]["input"]["variance"]]
        variance += [b["output"]["variance"] for b in last["blocks"]]
        grads = [b["grad"]["params"] for b in last["blocks"]]
        assert by_arm[arm]["variance"] == variance and by_arm[arm]["grad_norm"] == grads
        assert by_arm[arm]["steps"] == [12]
        assert f"{variance[-1] / variance[1]:.2f}" in markdown
        records = [json.loads(line) for line in (run_dir / "diagnostics.jsonl").read_text()
                   .splitlines()]
        peaks = [max(b["max_attention_logit"] for b in r["blocks"]) for r in records]
        assert by_arm[arm]["attention_logit"] == [peaks[0], peaks[-1]]  # first → last record
        assert f"{peaks[0]:.3g} → {peaks[-1]:.3g}" in markdown
    plot = out / "plots" / "normalization.png"
    assert plot.read_bytes()[:8] == PNG

    before = (out / "report.json").read_text()
    shutil.rmtree(out / "plots")
    (out / "report.md").unlink()
    (out / "report.json").unlink()
    assert cli.main(["report", *map(str, dirs), "--out", str(out)]) == 0
    assert (out / "report.json").read_text() == before
    assert plot.read_bytes()[:8] == PNG
    assert "## What normalization did" in (out / "report.md").read_text()


def test_report_without_diagnostics_says_how_to_turn_them_on(runs, tmp_path):
    table = write_report([runs["off"][0]], tmp_path)
    assert table["normalization"] == []
    assert "set `train.diagnose_every`" in (tmp_path / "report.md").read_text()
    assert not (tmp_path / "plots" / "normalization.png").exists()
