"""Transformer blocks whose norm placement is data: `Placement`, `SCHEMES`, `Block`.

    from normlab.blocks import SCHEMES, make_block, resolve_layout
    block = make_block(64, 4, scheme="mix", norm="rmsnorm", layer_index=0, depth=12)
"""

from normlab.blocks.block import (
    MLP,
    Attention,
    Block,
    attention_mask,
    check_shape,
    gpas,
    make_block,
)
from normlab.blocks.init import init_block, init_embedding, init_linear
from normlab.blocks.placement import (
    SCHEMES,
    SUBLAYERS,
    Gate,
    InitSpec,
    Layout,
    Placement,
    Scheme,
    deepnorm_constants,
    mix_boundary,
    register_scheme,
    resolve_layout,
    resolve_placement,
    tfixup_constants,
)

__all__ = [
    "MLP",
    "SCHEMES",
    "SUBLAYERS",
    "Attention",
    "Block",
    "Gate",
    "InitSpec",
    "Layout",
    "Placement",
    "Scheme",
    "attention_mask",
    "check_shape",
    "deepnorm_constants",
    "gpas",
    "init_block",
    "init_embedding",
    "init_linear",
    "make_block",
    "mix_boundary",
    "register_scheme",
    "resolve_layout",
    "resolve_placement",
    "tfixup_constants",
]
