"""AdamW groups, the warmup + cosine schedule, and the clipping: AGC against a reference written
from "High-Performance Large-Scale Image Recognition Without Normalization" (Brock, De, Smith,
Simonyan, ICML 2021), the global and GPAS gate clips against hand-computed numbers.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from normlab.bench.config import OptimConfig, ScheduleConfig
from normlab.bench.optim import (
    adaptive_clip_,
    classifier_parameters,
    clip_gradients_,
    gpas_gate_parameters,
    learning_rate,
    make_adamw,
)
from normlab.blocks import Block, Gate, Placement


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
    # peak 2.0, floor 0.1 * 2.0 = 0.2, warmup 4 steps, 21 steps: the cosine runs over steps
    # 4..20 (16 intervals), so step 4 + 16·p is at progress p:
    #   0.2 + 0.5 · 1.8 · (1 + cos(π p)),  p = 1/4: 0.2 + 0.9 · (1 + √2/2) = 1.7363961030678928
    #                                      p = 1/2: 0.2 + 0.9 = 1.1
    #                                      p = 3/4: 0.2 + 0.9 · (1 − √2/2) = 0.4636038969321072
    cfg = ScheduleConfig(warmup_steps=4, min_lr_ratio=0.1)
    lrs = [learning_rate(s, 21, 2.0, cfg) for s in range(21)]
    assert lrs[:5] == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0], rel=1e-12)
    assert [lrs[8], lrs[12], lrs[16]] == pytest.approx(
        [1.7363961030678928, 1.1, 0.4636038969321072], rel=1e-12)
    assert lrs[20] == pytest.approx(0.2, rel=1e-12)
    assert all(a > b for a, b in itertools.pairwise(lrs[4:]))
    assert learning_rate(0, 21, 2.0, ScheduleConfig(warmup_steps=0, min_lr_ratio=0.0)) == 2.0


def gpas_block(placement=None):
    placement = placement or Placement(attn=("pre",), mlp=("pre",),
                                       gates=(Gate("stream", fn="gpas"),))
    return Block(8, 2, placement)


def test_gpas_gates_are_found_from_the_placement():
    model = nn.Module()
    model.blocks = nn.ModuleList([gpas_block(), gpas_block()])
    # a per-sublayer GPAS gate next to a ReZero-style scale gate, which is not selected
    mixed = Placement(gates=(Gate("stream", fn="gpas", shared=False),
                             Gate("branch", init=0.0)))
    model.other = gpas_block(mixed)
    found = gpas_gate_parameters(model)
    want = [model.blocks[0].gates["stream"], model.blocks[1].gates["stream"],
            model.other.gates["stream_attn"], model.other.gates["stream_mlp"]]
    assert [id(p) for p in found] == [id(p) for p in want]


def test_gate_clip_without_gpas_gates_is_refused():
    model = nn.Sequential(Block(8, 2, Placement(gates=(Gate("branch"),))))
    with pytest.raises(ValueError, match=r"optim\.gate_clip"):
        gpas_gate_parameters(model)


def test_clipping_global_then_gates_by_hand():
    # gradients: w = (12,), gates a = 3, b = 4. Global norm √(144 + 9 + 16) = 13, clipped to
    # 6.5: everything × 1/2 -> w = 6, a = 1.5, b = 2. Gate norm √(1.5² + 2²) = 2.5, clipped to
    # 0.5: the gates × 1/5 -> a = 0.3, b = 0.4; w stays 6.
    w, a, b = (nn.Parameter(torch.zeros(s, dtype=torch.float64)) for s in ((1,), (), ()))
    w.grad, a.grad, b.grad = (torch.tensor(v, dtype=torch.float64) for v in ([12.0], 3.0, 4.0))
    cfg = OptimConfig(grad_clip=6.5, gate_clip=0.5)
    norm = clip_gradients_(cfg, [w, a, b], gate_params=[a, b])
    assert norm.item() == pytest.approx(13.0, rel=1e-12)
    got = [w.grad.item(), a.grad.item(), b.grad.item()]
    assert got == pytest.approx([6.0, 0.3, 0.4], rel=1e-5)  # torch divides by norm + 1e-6


@pytest.mark.parametrize("gate_clip", [0.0, None, 10.0])
def test_gate_clip_off_or_above_the_norm_leaves_gates(gate_clip):
    a, b = nn.Parameter(torch.zeros(())), nn.Parameter(torch.zeros(()))
    a.grad, b.grad = torch.tensor(3.0), torch.tensor(4.0)
    clip_gradients_(OptimConfig(grad_clip=0.0, gate_clip=gate_clip), [a, b], gate_params=[a, b])
    assert (a.grad.item(), b.grad.item()) == (3.0, 4.0)
