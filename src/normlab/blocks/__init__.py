"""Transformer blocks whose norm placement is data: `Placement`, `SCHEMES`, `Block`.

    from normlab.blocks import SCHEMES, make_block, resolve_layout
    block = make_block(64, 4, scheme="mix", norm="rmsnorm", layer_index=0, depth=12)
"""

from normlab.blocks.attention import QK_NORMS, GroupedAttention
from normlab.blocks.block import (
    MLP,
    Attention,
    Block,
    attention_mask,
    check_shape,
    gpas,
    make_block,
)
from normlab.blocks.hyper import HyperConnection, run_stack
from normlab.blocks.init import init_block, init_embedding, init_linear
from normlab.blocks.placement import (
    SCHEMES,
    SUBLAYERS,
    Gate,
    Hyper,
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
from normlab.blocks.rotary import apply_rotary, rotary_cos_sin
from normlab.blocks.swiglu import SwiGLU

__all__ = [
    "MLP",
    "QK_NORMS",
    "SCHEMES",
    "SUBLAYERS",
    "Attention",
    "Block",
    "Gate",
    "GroupedAttention",
    "Hyper",
    "HyperConnection",
    "InitSpec",
    "Layout",
    "Placement",
    "Scheme",
    "SwiGLU",
    "apply_rotary",
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
    "rotary_cos_sin",
    "run_stack",
    "tfixup_constants",
]
