"""The Llama presets: every arm builds the Llama; llama-quick is quick's sweep plus olmo2."""

from __future__ import annotations

import pytest

from normlab.bench.model import build_model
from normlab.bench.presets import expand, list_presets, load_preset
from normlab.models import Llama


@pytest.mark.parametrize("name", ["llama-smoke", "llama-quick"])
def test_llama_presets_build_the_llama(name):
    assert name in list_presets()
    cfg, sweep = load_preset(name)
    assert cfg.model.kind == "llama" and "olmo2" in sweep["placement.name"]
    for _, arm in expand(cfg, sweep):
        assert isinstance(build_model(arm), Llama)


def test_llama_quick_is_quick_on_the_llama():
    quick, quick_sweep = load_preset("quick")
    llama, llama_sweep = load_preset("llama-quick")
    assert llama_sweep["placement.name"] == [*quick_sweep["placement.name"], "olmo2"]
    assert llama_sweep["norm.name"] == quick_sweep["norm.name"]
    for section in ("data", "optim", "schedule", "train"):
        assert getattr(llama, section) == getattr(quick, section), section
    assert (llama.model.depth, llama.model.dim, llama.model.heads) == (4, 64, 4)
    assert build_model(expand(llama, {})[0][1]).config.mlp_hidden == 176  # 8/3·64 → ×16
