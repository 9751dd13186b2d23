"""nGPT: against a reference written from the paper's equations, the hypersphere invariants
after optimizer steps (to 1e-5), the scaling-trick init, training, and the bench's kind."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from tests.models.test_overfit_matrix import GPT_LR, overfit

from normlab.models import NGPT, NGPTConfig
from normlab.weights import UnitNormProjection

TINY = dict(vocab_size=32, block_size=8, depth=2, dim=16, heads=2, mlp_ratio=2.0)


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def rope(x, theta=1e4):
    """Half-split rotary embedding of x (B, H, T, d), from the RoFormer formula; the angles'
    cos and sin in float32, as the model (and HF's Llama) computes them."""
    t, d = x.shape[-2], x.shape[-1]
    freqs = 1.0 / theta ** (torch.arange(0, d, 2).float() / d)
    angles = torch.arange(t).float()[:, None] * freqs  # (T, d/2)
    a, b = x[..., : d // 2], x[..., d // 2:]
    cos, sin = angles.cos().double(), angles.sin().double()
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)


def reference(model: NGPT, idx: torch.Tensor) -> torch.Tensor:
    """The paper's equations with the effective scales written out (Sections 2.2–2.6)."""
    c = model.config
    d, heads, dh = c.dim, c.heads, c.dim // c.heads
    sqrt_d = math.sqrt(d)
    h = model.wte.weight[idx]  # (B, T, D)
    b, t, _ = h.shape
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    for blk in model.blocks:
        def proj(linear, z):
            return z @ linear.weight.T

        q, k, v = (proj(p, h).view(b, t, heads, dh).transpose(1, 2)
                   for p in (blk.q_proj, blk.k_proj, blk.v_proj))
        s_qk = (blk.s_qk.weight * sqrt_d).view(heads, 1, dh)  # stored 1/√D, effective 1
        q, k = s_qk * unit(rope(q)), s_qk * unit(rope(k))
        scores = (q @ k.transpose(-1, -2) * math.sqrt(dh)).masked_fill(~causal, -math.inf)
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        h_a = proj(blk.out_proj, y)
        alpha_a = (blk.alpha_attn.weight * 0.05 * sqrt_d).abs()
        h = unit(h + alpha_a * (unit(h_a) - h))
        u = proj(blk.fc1, h) * blk.s_u.weight * sqrt_d
        g = proj(blk.gate, h) * blk.s_v.weight * sqrt_d
        h_m = proj(blk.fc2, u * torch.nn.functional.silu(g))
        alpha_m = (blk.alpha_mlp.weight * 0.05 * sqrt_d).abs()
        h = unit(h + alpha_m * (unit(h_m) - h))
    return (model.s_z.weight * sqrt_d) * proj(model.lm_head, h)


def perturbed(seed=0) -> NGPT:
    torch.manual_seed(seed)
    model = NGPT(NGPTConfig(**TINY)).double()
    UnitNormProjection(model.unit_norm_matrices()).project()  # unit in float64, not float32
    with torch.no_grad():  # scales off their init (one negative α: |α| is used)
        for block in model.blocks:
            for scale in block.scales():
                scale.weight.mul_(1 + 0.5 * torch.randn_like(scale.weight))
        model.blocks[0].alpha_attn.weight[0] *= -1
        model.s_z.weight.mul_(1 + 0.5 * torch.randn_like(model.s_z.weight))
    return model


def test_forward_matches_the_paper_equations():
    model = perturbed()
    idx = torch.randint(0, 32, (2, 8))
    torch.testing.assert_close(model(idx)[0], reference(model, idx), rtol=1e-10, atol=1e-10)


def test_scaling_trick_gives_the_papers_effective_init():
    model = NGPT(NGPTConfig(**TINY))
    block = model.blocks[0]
    d = TINY["dim"]
    torch.testing.assert_close(block.alpha_attn(), torch.full((d,), 0.05))
    torch.testing.assert_close(block.alpha_mlp(), torch.full((d,), 0.05))
    torch.testing.assert_close(block.s_qk(), torch.ones(d))
    torch.testing.assert_close(block.s_u(), torch.full((32,), math.sqrt(d)))
    torch.testing.assert_close(block.s_v(), torch.full((32,), math.sqrt(d)))
    torch.testing.assert_close(model.s_z(), torch.ones(32))
    torch.testing.assert_close(block.alpha_attn.weight, torch.full((d,), d**-0.5))
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in model.modules())


def norms_off_one(model: NGPT) -> float:
    worst = 0.0
    for weight, dim in model.unit_norm_matrices().values():
        worst = max(worst, (weight.detach().norm(dim=dim) - 1).abs().max().item())
    return worst


def hidden_norms_off_one(model: NGPT, idx: torch.Tensor) -> float:
    states = [model.wte(idx)]
    hooks = [b.register_forward_hook(lambda m, i, o: states.append(o)) for b in model.blocks]
    model(idx)
    for hook in hooks:
        hook.remove()
    return max((s.detach().norm(dim=-1) - 1).abs().max().item() for s in states)


def test_every_weight_and_state_is_unit_norm_after_optimizer_steps():
    torch.manual_seed(0)
    model = NGPT(NGPTConfig(**TINY))
    proj = UnitNormProjection(model.unit_norm_matrices())
    opt = torch.optim.AdamW(model.parameters(), lr=5e-2, weight_decay=0.0)
    idx, targets = torch.randint(0, 32, (2, 2, 8))
    assert norms_off_one(model) < 1e-5  # normalized at init
    for _ in range(3):
        model(idx, targets)[1].backward()
        opt.step()
        opt.zero_grad()
        assert norms_off_one(model) > 1e-3  # the step leaves the sphere ...
        proj.project()
        assert norms_off_one(model) < 1e-5  # ... and the projection puts it back
        assert hidden_norms_off_one(model, idx) < 1e-5
    names = set(model.unit_norm_matrices())
    matrices = {n for n, p in model.named_parameters() if p.dim() == 2}
    assert names == matrices  # every matrix is on the sphere
    assert model.unit_norm_matrices()["blocks.0.out_proj.weight"][1] == 0
    assert model.unit_norm_matrices()["blocks.1.fc1.weight"][1] == 1


def test_projection_in_bfloat16_is_unit_norm_in_float32():
    w = torch.randn(8, 16, dtype=torch.bfloat16) * 3
    UnitNormProjection({"w": (w, 1)}).project()
    assert (w.float().norm(dim=1) - 1).abs().max() < 1e-2  # bf16 rounding of each entry


def test_projection_refuses_bad_input():
    with pytest.raises(ValueError, match="no matrices"):
        UnitNormProjection({})
    with pytest.raises(TypeError, match="2-D"):
        UnitNormProjection({"v": (torch.ones(3), 0)})
    with pytest.raises(ValueError, match="dim"):
        UnitNormProjection({"w": (torch.ones(3, 3), 2)})


def test_ngpt_overfits_a_tiny_batch():
    torch.manual_seed(0)
    model = NGPT(NGPTConfig(**TINY))
    proj = UnitNormProjection(model.unit_norm_matrices())
    gen = torch.Generator().manual_seed(1)
    idx, targets = (torch.randint(0, 32, (4, 8), generator=gen) for _ in range(2))
    first, end = overfit(model, GPT_LR, idx, targets, after_step=proj.project)
    assert end < 0.5 * first, (first, end)


def test_padded_keys_do_not_reach_real_queries():
    torch.manual_seed(0)
    model = NGPT(NGPTConfig(**TINY))
    idx = torch.randint(0, 32, (1, 8))
    mask = torch.ones(1, 8, dtype=torch.bool)
    mask[0, :2] = False
    changed = idx.clone()
    changed[0, :2] = (idx[0, :2] + 1) % 32
    torch.testing.assert_close(model(changed, mask=mask)[0][0, 2:], model(idx, mask=mask)[0][0, 2:])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"dim": 15}, "divisible"), ({"dim": 12, "heads": 4}, "even"), ({"depth": 0}, "depth"),
     ({"alpha_init": 0.0}, "alpha_init"), ({"mlp_ratio": 0.0}, "mlp_ratio")],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NGPTConfig(**{**TINY, **kwargs})


def test_the_bench_builds_ngpt_and_projects_after_every_step(tmp_path):
    from normlab.bench.config import RunConfig, from_dict
    from normlab.bench.runtime import Runtime
    from normlab.bench.train import LoopState, prepare, train_step

    cfg = from_dict(RunConfig, {
        "model": {"kind": "ngpt", "depth": 2, "dim": 16, "heads": 2},
        "optim": {"weight_decay": 0.0, "lr": 5e-2}, "schedule": {"warmup_steps": 0},
        "data": {"seq_len": 16, "batch_size": 2}, "device": "cpu", "precision": "fp32",
    })
    s = prepare(cfg, Runtime.start(cfg), tmp_path)
    assert isinstance(s.model, NGPT) and s.project is not None
    state = LoopState()
    for _ in range(2):
        assert train_step(s, state)["kind"] == "train"
        assert norms_off_one(s.model) < 1e-5


def test_the_bench_warns_about_weight_decay_and_warmup_for_ngpt():
    from normlab.bench.config import RunConfig, from_dict
    from normlab.bench.model import build_model, weight_projection

    cfg = from_dict(RunConfig, {"model": {"kind": "ngpt", "depth": 1, "dim": 16, "heads": 2}})
    model = build_model(cfg)
    with pytest.warns(UserWarning, match="without weight decay and warmup"):
        weight_projection(cfg, model)
    quiet = from_dict(RunConfig, {"model": {"kind": "ngpt", "depth": 1, "dim": 16, "heads": 2},
                                  "optim": {"weight_decay": 0.0},
                                  "schedule": {"warmup_steps": 0}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert weight_projection(quiet, model) is not None
    gpt = from_dict(RunConfig, {})
    assert weight_projection(gpt, build_model(gpt)) is None
