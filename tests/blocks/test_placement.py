"""Placement schemes as data: the table, per-layer rules and constants against the papers."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest

from normlab.blocks import (
    SCHEMES,
    Gate,
    InitSpec,
    Layout,
    Placement,
    Scheme,
    deepnorm_constants,
    make_block,
    mix_boundary,
    register_scheme,
    resolve_layout,
    resolve_placement,
    tfixup_constants,
)

# The published schemes; a new one registered in placement.py joins `SCHEMES` after them.
KNOWN = (
    "post", "pre", "peri", "mix", "lns", "deepnorm", "normformer", "gpas", "rezero", "skipinit",
    "tfixup", "none", "olmo2", "hybridnorm", "hc",
)

# The norm slots (attn, mlp) and model-level norms (final, embedding) each paper specifies, at
# default options, for a block that is not special (Mix-LN: a late, Pre-LN block).
EXPECTED = {
    "post": (("post",), ("post",), False, False),
    "pre": (("pre",), ("pre",), True, False),
    "peri": (("pre", "branch_out"), ("pre", "branch_out"), True, False),
    "mix": (("pre",), ("pre",), True, False),
    "lns": (("pre",), ("pre",), True, False),
    "deepnorm": (("post",), ("post",), False, False),
    "normformer": (("pre", "branch_out"), ("pre", "hidden"), True, False),
    "gpas": (("pre",), ("pre",), True, False),
    "rezero": ((), (), False, False),
    "skipinit": ((), (), False, False),
    "tfixup": ((), (), False, False),
    "none": ((), (), False, False),
    "olmo2": (("branch_out",), ("branch_out",), True, False),
    "hybridnorm": (("post",), (), True, False),
    "hc": (("pre",), ("pre",), True, False),
}


def test_the_published_schemes_are_registered_first():
    assert tuple(SCHEMES)[: len(KNOWN)] == KNOWN
    for name, scheme in SCHEMES.items():
        assert isinstance(scheme, Scheme) and scheme.name == name
        assert scheme.formula and scheme.paper


@pytest.mark.parametrize("name", KNOWN)
def test_slots_and_model_norms(name):
    attn, mlp, final, embed = EXPECTED[name]
    layout = resolve_layout(name, depth=8)
    last = layout.blocks[-1]
    assert (set(last.attn), set(last.mlp)) == (set(attn), set(mlp))
    assert (layout.final_norm, layout.embed_norm) == (final, embed)
    assert layout.depth == 8 and layout.scheme == name


def test_unknown_scheme_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown placement scheme 'sandwich'") as err:
        resolve_layout("sandwich", 4)
    for name in SCHEMES:
        assert name in str(err.value)


def test_names_are_case_insensitive():
    assert resolve_layout("DeepNorm", 4) == resolve_layout("deepnorm", 4)


@pytest.mark.parametrize(
    ("scheme", "options", "message"),
    [
        ("pre", {"alpha": 0.5}, "unknown option.*alpha.*accepted: none"),
        ("mix", {"ratio": 0.5}, "unknown option.*ratio.*accepted: alpha"),
        ("mix", {"alpha": 1.5}, r"alpha .* must be in \[0, 1\]"),
        ("gpas", {"base": "post"}, "base must be 'pre' or 'peri'"),
    ],
)
def test_bad_options(scheme, options, message):
    with pytest.raises(ValueError, match=message):
        resolve_layout(scheme, 4, **options)


@pytest.mark.parametrize("depth", [0, -1, 2.0, True])
def test_bad_depth(depth):
    with pytest.raises(ValueError, match="depth must be a positive int"):
        resolve_layout("pre", depth)


def test_bad_layer_index_and_architecture():
    with pytest.raises(ValueError, match=r"layer_index must be an int in \[0, 4\)"):
        resolve_placement("pre", 4, 4)
    with pytest.raises(ValueError, match="architecture must be one of"):
        resolve_layout("deepnorm", 4, architecture="seq2seq")


@pytest.mark.parametrize("depth", [1, 5, 12])
def test_lns_scale_is_one_over_sqrt_of_the_one_based_index(depth):
    for i in range(depth):
        p = resolve_placement("lns", i, depth)
        assert p.input_scale == pytest.approx(1 / math.sqrt(i + 1), rel=1e-15)
        assert p.residual_scale == 1.0
    assert resolve_placement("lns", 0, depth).input_scale == 1.0  # ℓ = 1: the first is unscaled


@pytest.mark.parametrize(
    ("alpha", "depth", "boundary"),
    [(0.25, 12, 3), (0.25, 24, 6), (0.0625, 32, 2), (0.25, 3, 0), (0.29, 100, 29),
     (0.0, 8, 0), (1.0, 8, 8), (0.5, 7, 3)],
)
def test_mix_boundary_is_floor_alpha_depth(alpha, depth, boundary):
    assert mix_boundary(alpha, depth) == boundary
    for i, p in enumerate(resolve_layout("mix", depth, alpha=alpha).blocks):
        kind = ("post",) if i < boundary else ("pre",)
        assert (p.attn, p.mlp) == (kind, kind), f"block {i} of {depth}"


def test_mix_default_alpha_is_a_quarter():
    assert SCHEMES["mix"].options() == {"alpha": 0.25}
    assert [p.attn for p in resolve_layout("mix", 8).blocks[:3]] == [("post",), ("post",), ("pre",)]


@pytest.mark.parametrize("architecture", ["decoder", "encoder"])
@pytest.mark.parametrize("depth", [1, 6, 32, 200])
def test_deepnorm_constants(depth, architecture):
    alpha, beta = deepnorm_constants(depth, architecture)
    assert alpha == pytest.approx((2 * depth) ** 0.25)
    assert beta == pytest.approx((8 * depth) ** -0.25)
    layout = resolve_layout("deepnorm", depth, architecture=architecture)
    for p in layout.blocks:
        assert p.residual_scale == pytest.approx(alpha)
        assert (p.attn, p.mlp) == (("post",), ("post",))  # Post-LN in the decoder too
    assert layout.init == InitSpec(linear="xavier", branch_gain=pytest.approx(beta))
    assert not layout.final_norm


def test_deepnorm_alpha_at_32_layers_is_the_hard_coded_2828_of_other_repos():
    assert deepnorm_constants(32)[0] == pytest.approx(2.828, abs=1e-3)
    assert deepnorm_constants(12)[0] != pytest.approx(2.828, abs=1e-2)


@pytest.mark.parametrize("depth", [1, 4, 24])
def test_tfixup_constants(depth):
    assert tfixup_constants(depth, "decoder") == pytest.approx(((9 * depth) ** -0.25,) * 2)
    assert tfixup_constants(depth, "encoder") == pytest.approx(
        (0.67 * depth**-0.25, (9 * depth) ** -0.25)
    )
    layout = resolve_layout("tfixup", depth)
    assert layout.init.linear == "xavier" and layout.init.embed_std is None
    assert layout.scale_embeddings and not layout.final_norm
    assert all(p == Placement() for p in layout.blocks)


def test_gates_of_the_gated_schemes():
    (rezero,) = resolve_placement("rezero", 0, 2).gates
    assert (rezero.site, rezero.fn, rezero.init, rezero.shared) == ("branch", "scale", 0.0, True)
    (skip,) = resolve_placement("skipinit", 0, 2).gates
    assert (skip.site, skip.init, skip.shared) == ("branch", 0.0, False)
    (gpas,) = resolve_placement("gpas", 1, 2).gates
    assert (gpas.site, gpas.fn, gpas.init, gpas.shared) == ("stream", "gpas", 0.0, True)
    assert set(gpas.sublayers) == {"attn", "mlp"}  # one gate per layer, shared by both


def test_gpas_on_peri():
    p = resolve_placement("gpas", 0, 2, base="peri")
    assert p.attn == ("pre", "branch_out") and p.gate("mlp", "stream") is not None


def test_peri_embedding_norm_option():
    assert not resolve_layout("peri", 2).embed_norm
    assert resolve_layout("peri", 2, embed_norm=True).embed_norm


def test_normformer_options():
    default = resolve_placement("normformer", 0, 2)
    assert default.head_scale and default.gates == ()
    bare = resolve_placement(
        "normformer", 0, 2, scale_heads=False, scale_attn=False, scale_fc=False
    )
    assert bare == resolve_placement("pre", 0, 2)
    (resid,) = resolve_placement("normformer", 0, 2, scale_resids=True).gates
    assert (resid.site, resid.per_channel, resid.init, resid.sublayers) == (
        "residual", True, 1.0, ("mlp",),
    )


def test_placement_is_frozen_data():
    p = resolve_placement("pre", 0, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.input_scale = 2.0
    assert hash(p) == hash(Placement(attn=("pre",), mlp=("pre",)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attn": ("hidden",)}, "Placement.attn"),
        ({"mlp": ("pre", "pre")}, "Placement.mlp"),
        ({"mlp": ("middle",)}, "Placement.mlp"),
        ({"input_scale": 0.0}, "input_scale"),
        ({"residual_scale": math.inf}, "residual_scale"),
        ({"gates": (Gate("branch"), Gate("branch", shared=False))}, "same site"),
    ],
)
def test_bad_placements(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Placement(**kwargs)


def test_bad_gates():
    with pytest.raises(ValueError, match="site='stream'"):
        Gate("branch", fn="gpas")
    with pytest.raises(ValueError, match=r"Gate\.site"):
        Gate("shortcut")
    with pytest.raises(ValueError, match="sublayers"):
        Gate("branch", sublayers=("ffn",))


def test_adding_a_scheme_is_one_decorated_function():
    """A scheme that normalizes only the branch outputs needs data only: no flag anywhere."""
    with SCHEMES.temporary():

        @register_scheme("branchout", formula="y = x + N(F(x))", paper="(an example)")
        def branch_out(depth, architecture):
            return Layout((Placement(attn=("branch_out",), mlp=("branch_out",)),) * depth)

        block = make_block(16, 2, scheme="branchout", norm="rmsnorm", layer_index=1, depth=3)
        assert set(block.norm_slots()) == {"attn_branch_out", "mlp_branch_out"}
        assert resolve_layout("BranchOut", 3).scheme == "branchout"
    assert "branchout" not in SCHEMES


def test_every_scheme_is_documented():
    text = (Path(__file__).resolve().parents[2] / "docs" / "placements.md").read_text()
    documented = re.findall(r"^### `([a-z0-9]+)`", text, flags=re.MULTILINE)
    assert documented == list(SCHEMES)
