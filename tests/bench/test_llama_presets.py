"""The Llama presets: every arm builds the Llama; quick is gpt-quick's comparison on the Llama
plus OLMo-2's reordered norm."""

from __future__ import annotations

import pytest
import torch

from normlab.bench.model import build_model
from normlab.bench.presets import expand, list_presets, load_preset
from normlab.models import Llama


@pytest.mark.parametrize("name", ["llama-smoke", "quick"])
def test_llama_presets_build_the_llama(name):
    assert name in list_presets()
    cfg, sweep = load_preset(name)
    assert cfg.model.kind == "llama" and "olmo2" in sweep["placement.name"]
    for _, arm in expand(cfg, sweep):
        assert isinstance(build_model(arm), Llama)


def test_quick_is_gpt_quick_on_the_llama():
    gpt, gpt_sweep = load_preset("gpt-quick")
    llama, llama_sweep = load_preset("quick")
    assert llama_sweep["placement.name"] == [*gpt_sweep["placement.name"], "olmo2"]
    assert llama_sweep["norm.name"] == gpt_sweep["norm.name"]
    for section in ("data", "optim"):
        assert getattr(llama, section) == getattr(gpt, section), section
    assert llama.recipes == gpt.recipes
    assert (llama.model.depth, llama.model.dim, llama.model.heads) == (4, 64, 4)
    assert build_model(expand(llama, {})[0][1]).config.mlp_hidden == 176  # 8/3·64 → ×16


@pytest.mark.parametrize(("name", "millions"), [("ladder-20m", 18.9), ("ladder-125m", 125.8)])
def test_the_scale_ladder_has_its_stated_sizes(name, millions):
    cfg, sweep = load_preset(name)
    assert cfg.data.tokenizer == "bpe" and sweep["norm.name"] == ["layernorm", "rmsnorm", "dyt"]
    with torch.device("meta"):
        model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, abs=0.1)
