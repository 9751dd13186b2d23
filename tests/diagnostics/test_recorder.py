"""Recorder: what it selects, that it leaves no hook behind, changes nothing, and collects the
right tensors; summarize and skip_block_losses on models whose answers are known by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from normlab import make_norm
from normlab.diagnostics import Recorder, skip_block_losses, summarize
from normlab.diagnostics.select import select_blocks, select_norms

D = 8


class ToyBlock(nn.Module):
    def __init__(self, norm: str = "rmsnorm") -> None:
        super().__init__()
        self.norm = make_norm(norm, D)
        self.fc = nn.Linear(D, D)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return x + self.fc(self.norm(x, mask))


class Toy(nn.Module):
    def __init__(self, depth: int = 3, norm: str = "rmsnorm") -> None:
        super().__init__()
        self.inp = nn.Linear(4, D)
        self.layers = nn.ModuleList(ToyBlock(norm) for _ in range(depth))
        self.final = nn.LayerNorm(D)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.inp(x)
        for layer in self.layers:
            h = layer(h, mask)
        return self.final(h)


def toy(seed: int = 0, **kw) -> Toy:
    torch.manual_seed(seed)
    return Toy(**kw)


def batch(seed: int = 1, b: int = 2, t: int = 5) -> torch.Tensor:
    return torch.randn(b, t, 4, generator=torch.Generator().manual_seed(seed))


def hook_count(model: nn.Module) -> int:
    count = 0
    for m in model.modules():
        count += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        count += len(m._backward_pre_hooks)
    return count + sum(len(p._backward_hooks or {}) for p in model.parameters())


def test_auto_detection_of_blocks_and_norms():
    model = toy()
    assert [n for n, _ in select_blocks(model)] == ["layers.0", "layers.1", "layers.2"]
    assert [n for n, _ in select_norms(model)] == [
        "layers.0.norm", "layers.1.norm", "layers.2.norm", "final"]


def test_selectors_glob_list_predicate_outermost_and_errors():
    model = toy()
    assert [n for n, _ in select_blocks(model, "layers.*")] == ["layers.0", "layers.1",
                                                                "layers.2"]
    assert [n for n, _ in select_blocks(model, ["layers.1", "inp"])] == ["inp", "layers.1"]
    picked = select_norms(model, lambda name, m: isinstance(m, nn.LayerNorm))
    assert [n for n, _ in picked] == ["final"]
    with pytest.raises(ValueError, match="matched no module"):
        select_blocks(model, "transformer.h.*")
    with pytest.raises(TypeError, match="selector"):
        select_blocks(model, 3)
    with pytest.raises(ValueError, match=r"no nn\.ModuleList"):
        select_blocks(nn.Sequential(nn.Linear(2, 2)))


def test_hooks_removed_on_exit_and_on_error():
    model = toy()
    assert hook_count(model) == 0
    with Recorder(model) as rec:
        assert hook_count(model) > 0
        model(batch()).square().mean().backward()
    assert hook_count(model) == 0
    assert rec.recording.steps == 1
    with pytest.raises(RuntimeError, match="boom"), Recorder(model):
        model(batch()).sum().backward()
        raise RuntimeError("boom")
    assert hook_count(model) == 0


def test_hooks_removed_when_attaching_fails(monkeypatch):
    model = toy()
    rec = Recorder(model)
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("attach failed")
        return original(*args, **kwargs)

    original = nn.Module.register_forward_hook
    monkeypatch.setattr(nn.Module, "register_forward_hook", failing)
    with pytest.raises(RuntimeError, match="attach failed"), rec:
        pass
    assert hook_count(model) == 0


def test_outputs_and_gradients_identical_with_and_without_recorder():
    x = batch()
    plain = toy()
    out_plain = plain(x)
    out_plain.square().mean().backward()
    recorded = toy()
    with Recorder(recorded, max_tokens=3):
        out_rec = recorded(x)
        out_rec.square().mean().backward()
    assert torch.equal(out_plain, out_rec)
    for (name, p), q in zip(plain.named_parameters(), recorded.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name


def manual_trace(model: Toy, x: torch.Tensor):
    """Block inputs/outputs and ∂loss/∂output of each block, computed without hooks."""
    h = model.inp(x)
    ins, outs = [], []
    for layer in model.layers:
        ins.append(h)
        h = layer(h)
        h.retain_grad()
        outs.append(h)
    model.final(h).square().mean().backward()
    return ins, outs


def test_collected_tensors_equal_the_real_ones():
    x = batch()
    reference = toy()
    ins, outs = manual_trace(reference, x)
    model = toy()
    with Recorder(model) as rec:
        model(x).square().mean().backward()
    r = rec.recording
    for i, name in enumerate(["layers.0", "layers.1", "layers.2"]):
        assert torch.allclose(r.block_in[name][0].values, ins[i].reshape(-1, D))
        assert torch.allclose(r.block_out[name][0].values, outs[i].reshape(-1, D))
        assert torch.allclose(r.block_out_grad[name][0].values, outs[i].grad.reshape(-1, D))
        params = reference.layers[i].parameters()
        expected = math.sqrt(sum(p.grad.double().square().sum().item() for p in params))
        assert math.sqrt(r.param_grad_sq[name][0]) == pytest.approx(expected, rel=1e-6)
    normed = reference.layers[1].norm(ins[1])
    assert torch.allclose(r.norm_out["layers.1.norm"][0].values, normed.reshape(-1, D))


def test_steps_max_tokens_and_token_mask():
    model = toy()
    mask = torch.tensor([[True, True, False, False, False], [True, False, True, True, True]])
    with torch.no_grad(), Recorder(model, max_tokens=4, token_mask=mask) as rec:
        model(batch(1))
        model(batch(2))
    captures = rec.recording.block_out["layers.0"]
    assert rec.recording.steps == 2 and [c.step for c in captures] == [0, 1]
    # real tokens in (batch, token) order: rows 0, 1, 5, 7, 8, 9 -> the first 4 kept
    assert captures[0].rows.tolist() == [0, 1, 5, 7]
    assert captures[0].values.shape == (4, D)
    assert not rec.recording.block_out_grad  # no backward, no gradient captures


def test_summary_on_toy_model_is_finite_and_consistent():
    model = toy()
    with Recorder(model) as rec:
        for seed in (1, 2):
            model(batch(seed)).square().mean().backward()
    doc = summarize(rec.recording)
    assert doc["steps"] == 2 and len(doc["blocks"]) == 3 and len(doc["norms"]) == 4
    values = torch.cat([c.values for c in rec.recording.block_out["layers.2"]]).double()
    assert doc["blocks"][2]["output"]["variance"] == pytest.approx(values.var(correction=0).item())
    for block in doc["blocks"]:
        numbers = [block["angular_distance"], block["grad"]["params"],
                   block["grad"]["output_token_norm"], block["outliers"]["kurtosis"],
                   *block["output"].values()]
        assert all(math.isfinite(v) for v in numbers)
    assert [n["block"] for n in doc["norms"]] == [0, 1, 2, None]
    assert doc["norms"][0]["kind"] == "rmsnorm" and doc["norms"][3]["kind"] == "layernorm"
    assert doc["norms"][0]["output"]["rms"] == pytest.approx(1.0, abs=1e-3)  # RMSNorm, γ = 1


class Spike(nn.Module):
    """Adds `value` at one (batch, token, channel) of the stream."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        y[1, 2, 5] += self.value
        return y


def test_massive_activation_position():
    model = nn.Module()
    model.layers = nn.ModuleList([Spike(0.0), Spike(100.0), Spike(-100.0)])
    model.forward = lambda x: model.layers[2](model.layers[1](model.layers[0](x)))
    x = torch.randn(2, 4, D, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad(), Recorder(model) as rec:
        model(x)
    top = summarize(rec.recording, top_k=3)["massive_activations"][0]
    assert (top["block"], top["batch"], top["token"], top["channel"]) == (1, 1, 2, 5)
    assert top["value"] == pytest.approx(100.0 + x[1, 2, 5].item(), rel=1e-6)


def test_dyt_alpha_and_saturation():
    model = toy(norm="dyt")
    with torch.no_grad():
        model.layers[0].norm.alpha.fill_(3.0)
    x = batch() * 10
    with torch.no_grad(), Recorder(model) as rec:
        model(x)
    entry = summarize(rec.recording)["norms"][0]
    inputs = model.inp(x).detach()
    expected = (torch.tanh(3.0 * inputs).abs() > 0.99).double().mean().item()
    assert entry["dyt"]["alpha"] == 3.0
    assert entry["dyt"]["saturation"] == pytest.approx(expected)
    assert 0.0 < expected < 1.0


def test_batch_statistics_fluctuation_against_running_buffers():
    model = toy(norm="batchnorm").train()
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    first = model.layers[0].norm
    xs = [batch(seed) for seed in (1, 2, 3)]
    expected_mean, expected_var, running_mean, running_var = [], [], [], []
    reference = toy(norm="batchnorm").train()  # an identical copy, run without hooks
    with torch.no_grad():
        for x in xs:
            h = reference.inp(x)[mask]  # (real tokens, D) entering the first norm
            expected_mean.append(h.mean(0))
            expected_var.append(h.var(0, correction=0))
            running_mean.append(reference.layers[0].norm.running_mean.clone())
            running_var.append(reference.layers[0].norm.running_var.clone())
            reference(x, mask)
    with torch.no_grad(), Recorder(model) as rec:
        for x in xs:
            model(x, mask)
    moments = rec.recording.batch_moments["layers.0.norm"]
    assert len(moments) == 3
    for got, mean, var in zip(moments, expected_mean, expected_var, strict=True):
        assert torch.allclose(got.mean.float(), mean, atol=1e-6)
        assert torch.allclose(got.var.float(), var, atol=1e-6)
    stats = summarize(rec.recording)["norms"][0]["batch_stats"]
    mean, var = torch.stack(expected_mean).double(), torch.stack(expected_var).double()
    rm, rv = torch.stack(running_mean).double(), torch.stack(running_var).double()
    scale = (rv + first.eps).sqrt()
    assert stats["steps"] == 3 and stats["mean_square"] is None
    assert stats["mean"]["deviation"] == pytest.approx(((mean - rm).abs() / scale).mean().item(),
                                                       rel=1e-5)
    step_std = (var.std(0, correction=0) / (rv + first.eps).mean(0)).mean().item()
    assert stats["var"]["step_std"] == pytest.approx(step_std, rel=1e-5)


def test_skip_block_losses_by_hand():
    class AddConst(nn.Module):
        def __init__(self, c: float) -> None:
            super().__init__()
            self.c = c

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
            return x + self.c, None  # HF-style tuple output

    model = nn.Module()
    model.layers = nn.ModuleList([AddConst(1.0), AddConst(2.0), AddConst(4.0)])

    def loss_fn(m: nn.Module) -> torch.Tensor:
        h = torch.zeros(3)
        for layer in m.layers:
            h = layer(h)[0]
        return h.mean() ** 2

    base, deltas = skip_block_losses(model, loss_fn)
    assert base == pytest.approx(49.0)
    assert deltas == pytest.approx([36.0 - 49.0, 25.0 - 49.0, 9.0 - 49.0])
    assert hook_count(model) == 0


def test_skip_refuses_shape_changing_blocks():
    model = nn.Module()
    model.layers = nn.ModuleList([nn.Linear(3, 3), nn.Linear(3, 2)])
    with pytest.raises(ValueError, match=r"cannot skip block 'layers\.1'"):
        skip_block_losses(model, lambda m: m.layers[1](m.layers[0](torch.ones(1, 3))).sum())
    assert hook_count(model) == 0


def test_bad_arguments():
    with pytest.raises(TypeError, match=r"nn\.Module"):
        Recorder("model")
    with pytest.raises(ValueError, match="max_tokens"):
        Recorder(toy(), max_tokens=0)
    with pytest.raises(TypeError, match="bool tensor"):
        Recorder(toy(), token_mask=torch.ones(2, 5, dtype=torch.long))
    rec = Recorder(toy())
    with rec, pytest.raises(RuntimeError, match="already attached"):
        rec.__enter__()
    with pytest.raises(ValueError, match="nothing was recorded"):
        summarize(Recorder(toy()).recording)
