"""Weight initialization following an `InitSpec` (the recipe a placement scheme prescribes)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from normlab.blocks.block import Block
from normlab.blocks.placement import InitSpec


@torch.no_grad()
def init_linear(
    linear: nn.Linear, spec: InitSpec, gain: float = 1.0, std: float | None = None
) -> None:
    """weight ~ N(0, std or spec.std) or xavier_normal (gain 1), times `gain`; bias = 0."""
    if spec.linear == "normal":
        nn.init.normal_(linear.weight, 0.0, spec.std if std is None else std)
    else:
        nn.init.xavier_normal_(linear.weight)
    linear.weight.mul_(gain)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


@torch.no_grad()
def init_embedding(weight: Tensor, spec: InitSpec, gain: float = 1.0) -> None:
    """weight ~ N(0, spec.embed_std), D^{-1/2} when that is None (D = weight.shape[-1]), × gain."""
    std = weight.shape[-1] ** -0.5 if spec.embed_std is None else spec.embed_std
    nn.init.normal_(weight, 0.0, std)
    weight.mul_(gain)


@torch.no_grad()
def init_block(block: Block, spec: InitSpec) -> None:
    """Initialize a block's Linears, gates and head scales; its norms keep their own init.

    q_proj and k_proj get the base init; v_proj, out_proj, fc1 and fc2 the base init times
    `spec.branch_gain` (DeepNorm's β, T-Fixup's factor; 1 otherwise). Gates are reset to their
    `Gate.init` (0 for ReZero, SkipInit and GPAS; 1 for NormFormer's λ_resid), NormFormer's
    head scales to 1 and hyper-connections to their identity-like init.
    """
    attn, mlp = block.attn, block.mlp
    for linear in (attn.q_proj, attn.k_proj):
        init_linear(linear, spec)
    for linear in (attn.v_proj, attn.out_proj, mlp.fc1, mlp.fc2):
        init_linear(linear, spec, spec.branch_gain)
    for gate in block.placement.gates:
        for sublayer in gate.sublayers:
            block.gates[gate.key(sublayer)].fill_(gate.init)
    if attn.head_scale is not None:
        nn.init.ones_(attn.head_scale)
    if block.hyper is not None:
        for connection in block.hyper.values():
            connection.reset_parameters()
