"""AdamW groups, the warmup + cosine schedule and AGC against a reference from methods.md §15f."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from normlab.bench.config import OptimConfig, ScheduleConfig
from normlab.bench.optim import adaptive_clip_, classifier_parameters, learning_rate, make_adamw


def reference_agc(weight, grad, clip, eps):
    """Row by row, in plain Python floats."""
    rows_w = weight.reshape(weight.shape[0], -1).tolist() if weight.dim() > 1 else [
        weight.flatten().tolist()]
    rows_g = grad.reshape(grad.shape[0], -1).tolist() if grad.dim() > 1 else [
        grad.flatten().tolist()]
    out = []
    for w, g in zip(rows_w, rows_g, strict=True):
        w_norm = math.sqrt(sum(v * v for v in w))
        g_norm = math.sqrt(sum(v * v for v in g))
        limit = clip * max(w_norm, eps)
        factor = limit / max(g_norm, 1e-6) if g_norm > limit else 1.0
        out.append([v * factor for v in g])
    return torch.tensor(out, dtype=torch.float64).reshape(grad.shape)


@pytest.mark.parametrize("shape", [(5, 3), (4, 2, 3), (7,), ()])
def test_agc_matches_reference(shape):
    torch.manual_seed(0)
    param = nn.Parameter(torch.randn(shape, dtype=torch.float64))
    if len(shape) >= 2:
        with torch.no_grad():
            param[0].mul_(100.0)  # one unit with a large weight: its gradient is not clipped
            param[1].zero_()  # a zero unit: eps sets the limit
    param.grad = torch.randn(shape, dtype=torch.float64)
    want = reference_agc(param.detach(), param.grad.clone(), clip=0.05, eps=1e-3)
    adaptive_clip_([param], clip=0.05, eps=1e-3)
    torch.testing.assert_close(param.grad, want, rtol=1e-12, atol=1e-15)
    if len(shape) >= 2:
        assert not param.grad[0].equal(torch.zeros_like(param.grad[0]))


def test_agc_skips_parameters_without_grad():
    param = nn.Parameter(torch.ones(3))
    adaptive_clip_([param], clip=0.01)
    assert param.grad is None


def test_classifier_is_found_and_missing_head_is_an_error():
    model = nn.Module()
    model.body = nn.Linear(4, 4)
    with pytest.raises(ValueError, match="lm_head"):
        classifier_parameters(model)
    model.lm_head = nn.Linear(4, 9)
    assert classifier_parameters(model) == {id(p) for p in model.lm_head.parameters()}


def test_weight_decay_only_on_matrices():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    opt = make_adamw(model, OptimConfig(weight_decay=0.3))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight)}


def test_schedule_warmup_then_cosine():
    cfg = ScheduleConfig(warmup_steps=4, min_lr_ratio=0.1)
    lrs = [learning_rate(s, 20, 1.0, cfg) for s in range(20)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[3] == lrs[4] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(lrs[4:]))
    mid = 4 + (20 - 1 - 4) / 2  # halfway through the decay: the mean of lr and the floor
    assert learning_rate(int(mid), 20, 1.0, cfg) == pytest.approx(
        0.1 + 0.45 * (1 + math.cos(math.pi * (int(mid) - 4) / 15)))
