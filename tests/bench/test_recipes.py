"""Per-norm recipes: a preset gives a norm the settings its paper uses, on that norm's arms only."""

from __future__ import annotations

import pytest

from normlab.bench.config import with_recipe
from normlab.bench.model import build_model, model_config
from normlab.bench.presets import expand, load_preset
from normlab.norms.elementwise import DyT

RECIPE = ("recipes={dyt: {model.embed_gain_init: 8.0, norm.kwargs_by_position: "
          "{attn: {alpha_init: 4.0}, mlp: {alpha_init: 1.0}, outside: {alpha_init: 1.0}}}}")


def _arms(*overrides: str):
    cfg, sweep = load_preset("llama-smoke", ["norm.name=[layernorm, dyt]", "placement.name=pre",
                                             RECIPE, *overrides])
    return {arm.norm.name: arm for _, arm in expand(cfg, sweep)}


def test_the_recipe_reaches_the_dyt_arm_only():
    arms = _arms()
    dyt, layernorm = build_model(arms["dyt"]), build_model(arms["layernorm"])
    assert dyt.embed_gain.item() == 8.0 and layernorm.embed_gain is None
    block = dyt.blocks[0]
    assert block.norms["attn_pre"].alpha.item() == 4.0
    assert block.norms["mlp_pre"].alpha.item() == 1.0
    assert isinstance(dyt.final_norm, DyT) and dyt.final_norm.alpha.item() == 1.0
    # the saved config keeps the preset's fields and the recipe, not a rewritten copy
    assert arms["dyt"].model.embed_gain_init is None
    assert with_recipe(arms["dyt"]).model.embed_gain_init == 8.0
    assert with_recipe(arms["layernorm"]) == arms["layernorm"]


def test_a_set_of_a_field_wins_over_the_recipe():
    arms = _arms("model.embed_gain_init=2.0")
    assert build_model(arms["dyt"]).embed_gain.item() == 2.0
    assert build_model(arms["layernorm"]).embed_gain.item() == 2.0
    assert model_config(arms["dyt"]).norm_kwargs_by_position["attn"] == {"alpha_init": 4.0}


@pytest.mark.parametrize(("recipe", "message"), [
    ("recipes={dyt: {optim.lr: 1.0}}", "'optim.lr' cannot be set by a recipe"),
    ("recipes={dyt: {model.kind: gpt}}", "'model.kind' cannot be set by a recipe"),
    ("recipes={tanhnorm: {model.embed_gain_init: 8.0}}", "unknown norm 'tanhnorm'"),
    ("recipes={DyT: {model.embed_gain_init: 8.0}}", "write 'dyt'"),
    ("recipes={dyt: {model.embed_gain_init: big}}", "model.embed_gain_init"),
    ("recipes={dyt: {model.embed_gain_init: -1.0}}", "embed_gain_init must be > 0"),
])
def test_a_bad_recipe_is_refused_at_config_time(recipe, message):
    with pytest.raises(ValueError, match=message):  # by load_preset or, per arm, by expand
        expand(*load_preset("llama-smoke", ["norm.name=[layernorm, dyt]", recipe]))
