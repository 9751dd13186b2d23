"""Transformer blocks whose norm placement is data: `Placement`, `SCHEMES`, `Block`.

    from normlab.blocks import SCHEMES, make_block, resolve_layout
    block = make_block(64, 4, scheme="mix", norm="rmsnorm", layer_index=0, depth=12)
"""

from normlab.blocks.block import MLP, Attention, Block, attention_mask, gpas, make_block
from normlab.blocks.init import init_block, init_embedding, init_linear
from normlab.blocks.placement import (
    SCHEMES,
    Gate,
    InitSpec,
    Layout,
    Placement,
    Scheme,
    deepnorm_constants,
    mix_boundary,
    resolve_layout,
    resolve_placement,
    tfixup_constants,
)

__all__ = [
    "MLP",
    "SCHEMES",
    "Attention",
    "Block",
    "Gate",
    "InitSpec",
    "Layout",
    "Placement",
    "Scheme",
    "attention_mask",
    "deepnorm_constants",
    "gpas",
    "init_block",
    "init_embedding",
    "init_linear",
    "make_block",
    "mix_boundary",
    "resolve_layout",
    "resolve_placement",
    "tfixup_constants",
]
