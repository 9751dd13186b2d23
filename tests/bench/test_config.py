"""RunConfig: presets, type-checked overrides, errors that name the field, sweeps."""

from __future__ import annotations

import json

import pytest

from normlab.bench.config import RunConfig, from_dict
from normlab.bench.presets import expand, list_presets, load_preset


def test_presets_are_listed_and_load():
    assert {"smoke", "quick", "vit-quick"} <= set(list_presets())
    for name in ("smoke", "quick", "vit-quick"):
        cfg, sweep = load_preset(name)
        assert isinstance(cfg, RunConfig) and sweep


def test_quick_preset_compares_six_placements_by_three_norms_on_the_llama():
    cfg, sweep = load_preset("quick")
    arms = expand(cfg, sweep)
    pairs = {(c.placement.name, c.norm.name) for _, c in arms}
    assert pairs == {(p, n) for p in ("pre", "post", "peri", "mix", "lns", "olmo2")
                     for n in ("layernorm", "rmsnorm", "dyt")}
    assert len(arms) == 18 and cfg.model.kind == "llama" and cfg.data.source == "stdlib"
    assert "pre-layernorm-s0" in [name for name, _ in arms]


def test_overrides_are_typed():
    cfg, _ = load_preset("smoke", ["optim.lr=1e-3", "train.steps=7", "model.bias=false",
                                   "optim.agc=0.01", "optim.agc=null", "schedule.min_lr_ratio=0",
                                   "norm.kwargs={eps: 1.0e-6}", "precision=bf16",
                                   "optim.gate_clip=1e-2", "model.embed_gain_init=8"])
    assert cfg.optim.gate_clip == 0.01 and cfg.model.embed_gain_init == 8.0
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)
    assert cfg.train.steps == 7 and cfg.model.bias is False and cfg.optim.agc is None
    assert cfg.schedule.min_lr_ratio == 0.0 and isinstance(cfg.schedule.min_lr_ratio, float)
    assert cfg.norm.kwargs == {"eps": 1e-6} and cfg.precision == "bf16"


@pytest.mark.parametrize("override, named", [
    ("optim.lrr=1", "optim.lrr"),
    ("nosuch.x=1", "nosuch"),
    ("train.steps.x=1", "train.steps"),
    ("optim=3", "optim"),
])
def test_unknown_key_is_an_error_naming_it(override, named):
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        load_preset("smoke", [override])


@pytest.mark.parametrize("override, named", [
    ("train.steps=abc", "train.steps"),
    ("train.steps=1.5", "train.steps"),
    ("train.steps=true", "train.steps"),
    ("model.bias=3", "model.bias"),
    ("precision=fp8", "precision"),
    ("optim.lr=fast", "optim.lr"),
    ("norm.name=nosuchnorm", "norm.name"),
    ("train.steps=0", "train.steps"),
    ("model.dim=31", "model.dim"),
    ("norm.kwargs=[1, 2]", "norm.kwargs"),
    ("data.val_fraction=1.5", "data.val_fraction"),
    ("model.kind=vit", "model.kind"),
    ("optim.gate_clip=-0.01", "optim.gate_clip"),
    ("model.embed_gain_init=0", "model.embed_gain_init"),
])
def test_bad_value_is_an_error_naming_the_field(override, named):
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        cfg, sweep = load_preset("smoke", [override])
        expand(cfg, sweep)


def test_override_syntax_error():
    with pytest.raises(ValueError, match=r"section\.field=value"):
        load_preset("smoke", ["optim.lr"])


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="smoke"):
        load_preset("no-such-preset")


def test_list_override_makes_an_axis_and_scalar_pins_one():
    cfg, sweep = load_preset("smoke", ["train.seed=[0, 1, 2]", "norm.name=rmsnorm"])
    arms = expand(cfg, sweep)
    assert len(arms) == 2 * 3  # 2 placements x 3 seeds, norm pinned
    assert {c.norm.name for _, c in arms} == {"rmsnorm"}
    assert sorted({c.train.seed for _, c in arms}) == [0, 1, 2]
    assert [n for n, _ in arms][:3] == ["pre-s0", "pre-s1", "pre-s2"]


def test_bad_sweep_value_names_the_field():
    cfg, sweep = load_preset("smoke", ["optim.lr=[0.001, oops]"])
    with pytest.raises(ValueError, match=r"optim\.lr"):
        expand(cfg, sweep)


def test_resolved_config_round_trips_through_json():
    cfg, sweep = load_preset("quick", ["optim.agc=0.02"])
    for _, arm in expand(cfg, sweep):
        assert from_dict(RunConfig, json.loads(arm.to_json())) == arm


def test_preset_from_a_yaml_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("train: {steps: 3}\nsweep: {norm.name: [layernorm, dyt]}\n")
    cfg, sweep = load_preset(str(path))
    assert cfg.train.steps == 3 and [c.norm.name for _, c in expand(cfg, sweep)] == [
        "layernorm", "dyt"]
    path.write_text("train: {stepz: 3}\n")
    with pytest.raises(ValueError, match=r"train\.stepz"):
        load_preset(str(path))
