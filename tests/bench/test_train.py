"""The training loop: exact resume, divergence handling, AGC and gate clipping, metrics files."""

from __future__ import annotations

import json
import math

import pytest
from safetensors.torch import load_file

from normlab.bench import checkpoint, train
from normlab.bench.metrics import read_metrics
from normlab.bench.presets import load_preset

DETERMINISTIC = ("kind", "step", "loss", "lr", "grad_norm", "val_loss", "val_acc")


def smoke(cache_dir, *overrides):
    cfg, _ = load_preset("smoke", ["placement.name=pre", "norm.name=layernorm",
                                   f"data.cache_dir={cache_dir}", *overrides])
    return cfg


def comparable(records):
    return [{k: r[k] for k in DETERMINISTIC if k in r} for r in records]


class Interrupt(Exception):
    pass


def test_resume_after_a_kill_matches_the_uninterrupted_run_exactly(tmp_path, cache_dir):
    # dropout > 0 so the RNG state must be restored too; checkpoints at 4 and 8 of 12 steps
    cfg = smoke(cache_dir, "model.dropout=0.1", "train.checkpoint_every=4", "train.eval_every=3")
    straight = train.run(cfg, tmp_path / "straight")

    def kill_at_6(step, record):
        if step == 6:
            raise Interrupt

    with pytest.raises(Interrupt):
        train.run(cfg, tmp_path / "resumed", on_step=kill_at_6)
    assert checkpoint.latest(tmp_path / "resumed").name == "step_0000004"
    assert max(r["step"] for r in read_metrics(tmp_path / "resumed" / "metrics.jsonl")) == 6
    resumed = train.run(cfg, tmp_path / "resumed", resume=True)

    a = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    b = read_metrics(tmp_path / "resumed" / "metrics.jsonl")
    assert comparable(a) == comparable(b)  # exact equality, step for step
    assert [r["step"] for r in b if r["kind"] == "train"] == list(range(1, 13))
    assert resumed["status"] == straight["status"] == "completed"
    assert resumed["final_val_loss"] == straight["final_val_loss"]
    final_a = load_file(checkpoint.latest(tmp_path / "straight") / "model.safetensors")
    final_b = load_file(checkpoint.latest(tmp_path / "resumed") / "model.safetensors")
    assert final_a.keys() == final_b.keys()
    assert all(final_a[k].equal(final_b[k]) for k in final_a)


def test_metrics_and_summary_files(tmp_path, cache_dir):
    cfg = smoke(cache_dir)
    summary = train.run(cfg, tmp_path / "run")
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    steps = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in steps] == list(range(1, cfg.train.steps + 1))
    assert [r["step"] for r in evals] == [6, 12]
    assert all(r["tokens_per_s"] > 0 for r in steps)
    # the CUDA allocator's peak where there is one; never the process RSS
    assert all((r["mem_bytes"] > 0) if cfg.device == "cuda" else True for r in steps)
    # warmup then cosine: lr rises to the peak, then falls to min_lr_ratio * lr at the end
    assert steps[1]["lr"] == pytest.approx(cfg.optim.lr)
    assert steps[-1]["lr"] == pytest.approx(cfg.optim.lr * cfg.schedule.min_lr_ratio)
    assert summary["final_val_loss"] == evals[-1]["val_loss"] < math.log(256)
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["status"] == "completed" and on_disk["final_val_loss"] == evals[-1]["val_loss"]
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == cfg.to_dict()
    assert on_disk["config_sha256"] == json.loads(
        (tmp_path / "run" / "run.json").read_text())["config_sha256"]


def test_huge_learning_rate_diverges_cleanly(tmp_path, cache_dir):
    cfg = smoke(cache_dir, "optim.lr=1e4", "optim.grad_clip=0", "schedule.warmup_steps=0",
                "train.steps=30")
    summary = train.run(cfg, tmp_path / "run")
    assert summary["status"] == "diverged" and summary["final_val_loss"] is None
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    event = records[-1]
    assert event["kind"] == "diverged" and event["step"] == summary["diverged_step"] < 30
    assert not math.isfinite(event["loss"]) or (
        event["loss"] > cfg.train.spike_threshold * event["running_min"]
        and event["loss"] > event["initial_loss"])


@pytest.mark.parametrize(("loss", "running_min", "initial", "expected"), [
    (float("nan"), 2.0, 5.5, True),
    (float("inf"), 2.0, 5.5, True),
    (12.9, 3.0, 5.4, True),      # a language model blowing up
    (5.0, 3.0, 5.4, False),      # noisy but below 4 x the minimum
    (0.51, 0.11, 2.3, False),    # a classifier near 0 drawing a hard batch: not a divergence
    (2.5, 0.11, 2.3, True),      # the same classifier back above its starting loss
    (1e9, 1.0, 5.0, True),
])
def test_divergence_rule(loss, running_min, initial, expected):
    assert train.diverged(loss, running_min, initial, 4.0) is expected
    if math.isfinite(loss):
        assert train.diverged(loss, running_min, initial, 0.0) is False


def test_agc_option_runs_and_changes_the_update(tmp_path, cache_dir):
    plain = train.run(smoke(cache_dir, "train.steps=4"), tmp_path / "plain")
    clipped = train.run(smoke(cache_dir, "train.steps=4", "optim.agc=0.001"), tmp_path / "agc")
    assert clipped["status"] == "completed"
    assert clipped["final_train_loss"] != plain["final_train_loss"]


def test_vit_on_digits_trains(tmp_path, cache_dir):
    cfg, _ = load_preset("vit-quick", ["placement.name=pre", "norm.name=rmsnorm",
                                       "train.steps=6", "train.eval_every=3",
                                       "model.depth=1", "model.dim=32"])
    summary = train.run(cfg, tmp_path / "vit")
    evals = [r for r in read_metrics(tmp_path / "vit" / "metrics.jsonl") if r["kind"] == "eval"]
    assert summary["status"] == "completed" and 0.0 <= evals[-1]["val_acc"] <= 1.0


def test_fp16_on_cpu_is_refused(tmp_path, cache_dir):
    with pytest.raises(ValueError, match="fp16"):
        train.run(smoke(cache_dir, "precision=fp16", "device=cpu"), tmp_path / "x")


def test_gate_clip_caps_the_joint_gpas_gate_gradient(tmp_path, cache_dir, monkeypatch):
    before, after = [], []
    real = train.clip_gradients_

    def joint(gates):
        return math.sqrt(sum(p.grad.double().square().sum().item() for p in gates))

    def spy(cfg, params, *, agc_params, gate_params):
        assert len(gate_params) == 2  # one shared gate per block of the depth-2 model
        before.append(joint(gate_params))
        norm = real(cfg, params, agc_params=agc_params, gate_params=gate_params)
        after.append(joint(gate_params))
        return norm

    monkeypatch.setattr(train, "clip_gradients_", spy)
    cfg = smoke(cache_dir, "placement.name=gpas", "optim.gate_clip=1e-5", "train.steps=3")
    assert train.run(cfg, tmp_path / "gpas")["status"] == "completed"
    assert len(after) == 3 and all(b > 1e-5 for b in before)
    assert after == pytest.approx([1e-5] * 3, rel=1e-3)


def test_gate_clip_without_gpas_is_refused(tmp_path, cache_dir):
    with pytest.raises(ValueError, match=r"optim\.gate_clip"):
        train.run(smoke(cache_dir, "optim.gate_clip=0.01"), tmp_path / "x")


def test_embedding_gain_reaches_the_gpt_and_the_vit_warns():
    gpt, _ = load_preset("smoke", ["model.embed_gain_init=8"])
    assert train.build_model(gpt).embed_gain.item() == 8.0
    assert train.build_model(load_preset("smoke")[0]).embed_gain is None
    vit, _ = load_preset("vit-quick", ["model.embed_gain_init=8", "model.depth=1",
                                       "model.dim=16", "model.heads=2"])
    with pytest.warns(UserWarning, match=r"model\.embed_gain_init"):
        train.build_model(vit)
