"""The `modern` presets build what they say, and the new schemes and nGPT are refused by the
round trip with transformers, which has no native equivalent for them."""

from __future__ import annotations

import warnings

import pytest

from normlab.bench.model import build_model, weight_projection
from normlab.bench.presets import expand, load_preset
from normlab.models import GPT, NGPT, GPTConfig, Llama, LlamaConfig, NGPTConfig


def test_modern_is_three_schemes_by_three_norms_on_the_llama():
    cfg, sweep = load_preset("modern")
    assert sweep["placement.name"] == ["pre", "hybridnorm", "hc"]
    assert sweep["norm.name"] == ["layernorm", "rmsnorm", "dyt"]
    arms = expand(cfg, sweep)
    assert len(arms) == 9 and all(arm.model.kind == "llama" for _, arm in arms)
    _, hc = next(a for a in arms if a[1].placement.name == "hc")
    assert build_model(hc).layout.streams == 4


def test_modern_ngpt_trains_as_the_paper_does():
    cfg, sweep = load_preset("modern-ngpt")
    arms = [arm for _, arm in expand(cfg, sweep)]
    assert [arm.optim.lr for arm in arms] == [3e-3, 1e-2, 3e-2]
    arm = arms[0]
    assert all(a.optim.weight_decay == 0 and a.schedule.warmup_steps == 0 for a in arms)
    model = build_model(arm)
    assert isinstance(model, NGPT) and model.config.mlp_hidden == 176
    modern, _ = load_preset("modern")
    assert (arm.data, arm.train.steps, arm.optim.lr) == (modern.data, modern.train.steps,
                                                         modern.optim.lr)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert weight_projection(arm, model) is not None


@pytest.mark.parametrize("placement", ["hybridnorm", "hc"])
def test_transformers_export_refuses_the_new_schemes(placement):
    pytest.importorskip("transformers")
    from normlab.hf import to_hf

    options = {"dynamic": False} if placement == "hc" else {}  # no LayerNorm in the blocks
    for model in (
        Llama(LlamaConfig(depth=2, dim=16, heads=2, placement=placement, placement_kwargs=options)),
        GPT(GPTConfig(depth=2, dim=16, heads=2, placement=placement, placement_kwargs=options)),
    ):
        with pytest.raises(ValueError, match=placement):
            to_hf(model)


def test_transformers_export_refuses_ngpt():
    pytest.importorskip("transformers")
    from normlab.hf import to_hf

    with pytest.raises((TypeError, ValueError)):
        to_hf(NGPT(NGPTConfig(depth=1, dim=16, heads=2)))
