"""migrate_scales is exact, does what SmoothQuant / RepQ-ViT say to the ranges, and refuses
what it cannot do exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from quant_models import OUTLIER_CHANNELS, hf, inputs, normlab, output, rel_err

from normlab.surgery import fold_norms, migrate_scales, to_crmsnorm, to_rmsnorm
from normlab.surgery.adapters import get_adapter
from normlab.surgery.migrate import reader_ranges

TOL = 1e-5


def _calibration(model):
    return [inputs(model, seed=s) for s in (11, 12)]


@pytest.mark.parametrize("method", ["smoothquant", "repq"])
@pytest.mark.parametrize("arch", ["gpt2", "llama", "vit"])
def test_hf_outputs_unchanged(arch, method):
    model = hf(arch)
    source, batch = copy.deepcopy(model), inputs(model)
    model, report = migrate_scales(model, _calibration(model), method=method, alpha=0.7)
    assert rel_err(output(model, batch), output(source, batch)) < TOL
    assert report.max_rel_error < TOL and report.exact
    assert any("γ ← γ/s" in c.detail for c in report.changes)


@pytest.mark.parametrize("method", ["smoothquant", "repq"])
@pytest.mark.parametrize(("kind", "norm", "placement"), [
    ("gpt", "layernorm", "pre"), ("gpt", "rmsnorm", "lns"), ("gpt", "dyt", "pre"),
    ("llama", "rmsnorm", "pre"), ("llama", "layernorm", "pre"), ("vit", "layernorm", "pre"),
])
def test_normlab_outputs_unchanged(kind, norm, placement, method):
    model = normlab(kind, norm, placement)
    source, batch = copy.deepcopy(model), inputs(model)
    model, report = migrate_scales(model, _calibration(model), method=method)
    assert rel_err(output(model, batch), output(source, batch)) < TOL
    assert report.max_rel_error < TOL


def test_the_final_norm_migrates_only_when_selected_and_unties_the_head():
    model = normlab("gpt")
    source, batch = copy.deepcopy(model), inputs(model)
    _, report = migrate_scales(model, _calibration(model))
    assert "final_norm" not in {c.path for c in report.changes}
    model, report = migrate_scales(model, _calibration(model), where="final_norm")
    assert model.lm_head.weight is not model.wte.weight
    assert rel_err(output(model, batch), output(source, batch)) < TOL
    assert {c.path for c in report.changes} == {"lm_head", "final_norm"}


def _ranges(model, calibration):
    sites = [s for s in get_adapter(model).layout(model).norms if s.role == "pre"]
    return sites, reader_ranges(model, sites, calibration)


def test_smoothquant_alpha_half_balances_activation_and_weight_maxima():
    model = normlab("llama", "rmsnorm")
    calibration = _calibration(model)
    sites, before = _ranges(model, calibration)
    lo, hi = before[sites[0].path]
    assert torch.maximum(lo.abs(), hi.abs()).argmax().item() in OUTLIER_CHANNELS
    migrate_scales(model, calibration, alpha=0.5)
    _, after = _ranges(model, calibration)
    for site in sites:
        lo, hi = after[site.path]
        act = torch.maximum(lo.abs(), hi.abs())
        weight = torch.stack([model.get_submodule(p.path).weight.detach().double().abs().amax(0)
                              for p in site.readers]).amax(0)
        # s = √(a/w): a/s = w·s = √(a·w) in every channel
        torch.testing.assert_close(act, weight, rtol=1e-5, atol=1e-8)


def test_repq_gives_every_channel_the_same_centred_range():
    model = normlab("gpt", "layernorm")
    calibration = _calibration(model)
    sites, before = _ranges(model, calibration)
    migrate_scales(model, calibration, method="repq")
    _, after = _ranges(model, calibration)
    for site in sites:
        lo0, hi0 = before[site.path]
        lo, hi = after[site.path]
        mean_span = (hi0 - lo0).mean()
        # fp32 model: equal to float32 precision
        torch.testing.assert_close(hi - lo, mean_span.expand_as(hi), rtol=1e-5, atol=0)
        torch.testing.assert_close(hi + lo, torch.zeros_like(hi), rtol=0,
                                   atol=1e-5 * mean_span.item())


@pytest.mark.parametrize("constant", [[5], list(range(32))])
def test_repq_leaves_channels_constant_on_the_calibration_alone(constant):
    model = normlab("gpt", "dyt")
    with torch.no_grad():
        for block in model.blocks:
            block.norms.mlp_pre.weight[constant] = 0.0  # n_j = β_j on every token
    source, batch = copy.deepcopy(model), inputs(model)
    model, _ = migrate_scales(model, _calibration(model), method="repq")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert rel_err(output(model, batch), output(source, batch)) < TOL
    for block, old in zip(model.blocks, source.blocks, strict=True):
        assert torch.equal(block.norms.mlp_pre.bias[constant], torch.zeros(len(constant)))
        # r = 1: the readers' columns of those channels are unscaled
        torch.testing.assert_close(block.mlp.fc1.weight[:, constant],
                                   old.mlp.fc1.weight[:, constant])


def test_repq_without_beta_moves_the_scale_only():
    model = normlab("llama", "rmsnorm")
    _, report = migrate_scales(model, _calibration(model), method="repq")
    assert any("no β" in note for note in report.notes)


@pytest.mark.parametrize("make", [lambda: hf("bert"), lambda: normlab("gpt", placement="post")])
def test_norms_feeding_the_residual_stream_are_refused_before_anything_changes(make):
    model = make()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"also feeds the residual stream.*not be exact"):
        migrate_scales(model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_peri_ln_migrates_through_its_input_norms_only():
    model = normlab("gpt", placement="peri")
    with pytest.raises(ValueError, match="residual stream"):
        migrate_scales(model)
    source, batch = copy.deepcopy(model), inputs(model)
    model, _report = migrate_scales(model, _calibration(model), where="*_pre")
    assert rel_err(output(model, batch), output(source, batch)) < TOL


def test_bad_input():
    model = normlab("gpt", "layernorm")
    with pytest.raises(ValueError, match="method must be one of"):
        migrate_scales(model, method="awq")
    with pytest.raises(ValueError, match="alpha must be in"):
        migrate_scales(model, alpha=1.5)
    with pytest.raises(ValueError, match="selected no norm"):
        migrate_scales(model, where="nothing")
    plain = normlab("gpt", "scalenorm")
    with pytest.raises(ValueError, match="no per-channel γ"):
        migrate_scales(plain)
    unaffine = normlab("gpt", "layernorm")
    for block in unaffine.blocks:
        block.norms.attn_pre.weight = None
    with pytest.raises(ValueError, match="no per-channel γ"):
        migrate_scales(unaffine)


def test_random_calibration_is_noted():
    model = normlab("vit")
    _, report = migrate_scales(model)
    assert any("random probe batch" in note for note in report.notes)


@pytest.mark.parametrize("op", [fold_norms, to_rmsnorm, to_crmsnorm])
def test_the_normlab_llama_adapter_reads_the_swiglu_gate(op):
    # the Llama's MLP norm feeds fc1 and the gate: a fold that missed the gate would show
    model = normlab("llama", "layernorm")
    source, batch = copy.deepcopy(model), inputs(model)
    model, _ = op(model)
    assert rel_err(output(model, batch), output(source, batch)) < TOL
