"""The claim-* presets: they load, give >= 3 seeds per arm, every arm trains one step, and the
whole study fits the 3-hour budget on 2 CPU cores."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import pytest
import torch

from normlab.bench import train
from normlab.bench.config import RunConfig
from normlab.bench.optim import clip_gradients_, make_adamw
from normlab.bench.presets import expand, list_presets, load_preset

CLAIMS = [name for name in list_presets() if name.startswith("claim-")]

# Measured: the `quick` GPT (depth 4, width 64, seq_len 128, batch 16) trains at about
# 0.125 s per optimizer step on 2 idle CPU cores (30 s per 240-step arm).
SECONDS_PER_QUICK_STEP = 0.125
QUICK_TOKENS = 16 * 128
QUICK_DEPTH, QUICK_DIM = 4, 64
# An evaluation batch is a forward pass only: about a third of a training step.
EVAL_BATCH_COST = 1 / 3
BUDGET_S = 3 * 3600


def step_seconds(cfg: RunConfig) -> float:
    """Estimated seconds per training step: the quick GPT's cost scaled linearly by depth,
    by tokens per batch (patches + CLS token for the ViT) and quadratically by width."""
    if cfg.model.kind == "vit":
        tokens = cfg.data.batch_size * ((8 // cfg.model.patch_size) ** 2 + 1)
    else:
        tokens = cfg.data.batch_size * cfg.data.seq_len
    return (SECONDS_PER_QUICK_STEP * cfg.model.depth / QUICK_DEPTH * tokens / QUICK_TOKENS
            * (cfg.model.dim / QUICK_DIM) ** 2)


def run_seconds(cfg: RunConfig) -> float:
    evals = cfg.train.steps // cfg.train.eval_every + (cfg.train.steps % cfg.train.eval_every > 0)
    return step_seconds(cfg) * (cfg.train.steps + evals * cfg.train.eval_batches * EVAL_BATCH_COST)


def study_seconds() -> dict[str, float]:
    return {name: sum(run_seconds(cfg) for _, cfg in expand(*load_preset(name)))
            for name in CLAIMS}


def without_seed(cfg: RunConfig) -> str:
    return RunConfig(**{**vars(cfg), "train": dataclasses.replace(cfg.train, seed=0)}).to_json()


def test_every_claim_has_a_preset():
    for n in range(1, 9):
        assert f"claim-{n}" in CLAIMS


@pytest.mark.parametrize("name", CLAIMS)
def test_claim_preset_has_three_seeds_per_arm_and_one_budget(name):
    cfg, sweep = load_preset(name)
    assert sweep["train.seed"] == [0, 1, 2]
    arms = expand(cfg, sweep)
    seeds = defaultdict(set)
    for _, arm in arms:
        seeds[without_seed(arm)].add(arm.train.seed)
    assert len(seeds) * 3 == len(arms) and all(s == {0, 1, 2} for s in seeds.values())
    budgets = {(a.train.steps, a.model.depth, a.model.dim, a.data.seq_len, a.data.batch_size,
                a.optim.lr, a.schedule.warmup_steps) for _, a in arms}
    assert len(budgets) == 1, f"{name}: arms differ in budget: {budgets}"


@pytest.mark.parametrize("family", ["claim-6-lm", "claim-7"])
def test_split_claims_share_model_data_and_budget(family):
    members = [n for n in CLAIMS if n == family or n.startswith(family + "-")]
    assert len(members) > 1
    shared = set()
    for name in members:
        cfg, _ = load_preset(name)
        shared.add(json_of(cfg.model, "embed_gain_init") + json_of(cfg.data) + json_of(cfg.optim)
                   + json_of(cfg.schedule) + json_of(cfg.train) + cfg.placement.name)
    assert len(shared) == 1


def json_of(section, *skip: str) -> str:
    return repr({k: v for k, v in dataclasses.asdict(section).items() if k not in skip})


def test_claim_7_schedules_end_within_the_run():
    """The defaults assume 10^4-10^5 steps; sized down, each schedule ends before the run."""
    steps = load_preset("claim-7")[0].train.steps
    ends = {"claim-7-powernorm": lambda k: k["warmup_iters"],
            "claim-7-unifiednorm": lambda k: max(k["warmup_iters"], k["compensation_start"]),
            "claim-7-prepbn": lambda k: k["warm"] + k["step"]}
    for name, end in ends.items():
        cfg, _ = load_preset(name)
        assert cfg.train.steps == steps and 0 < end(cfg.norm.kwargs) < steps, name


def test_whole_study_fits_three_hours_on_two_cores():
    per_preset = study_seconds()
    assert 0 < sum(per_preset.values()) <= BUDGET_S, per_preset
    # a deeper model costs proportionally more: depth 12 is three quick steps
    cfg, _ = load_preset("claim-1")
    assert step_seconds(cfg) == pytest.approx(3 * SECONDS_PER_QUICK_STEP)


def _tiny_batch(cfg: RunConfig) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    if cfg.model.kind == "vit":
        return torch.randn(2, 1, 8, 8, generator=g), torch.randint(0, 10, (2,), generator=g)
    tokens = torch.randint(0, 256, (2, cfg.data.seq_len + 1), generator=g)
    return tokens[:, :-1], tokens[:, 1:]


@pytest.mark.parametrize("name", CLAIMS)
def test_every_arm_builds_and_trains_one_step(name):
    # 16-token sequences keep the test fast; the model's shape does not depend on seq_len
    for arm_name, cfg in expand(*load_preset(name, ["data.seq_len=16"])):
        torch.manual_seed(cfg.train.seed)
        model = train.build_model(cfg)
        model.train()
        optimizer = make_adamw(model, cfg.optim)
        before = [p.detach().clone() for p in model.parameters()]
        inputs, targets = _tiny_batch(cfg)
        _, loss = model(inputs, targets)
        assert torch.isfinite(loss), arm_name
        loss.backward()
        grad_norm = clip_gradients_(cfg.optim, list(model.parameters()))
        assert torch.isfinite(grad_norm) and grad_norm > 0, arm_name
        optimizer.step()
        moved = any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
        assert moved, f"{name}/{arm_name}: the step changed no parameter"
