"""What the GPT and the ViT share: the block-stack config, applying an optional norm,
counting."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor, nn

from normlab.blocks import SUBLAYERS, check_shape, resolve_layout
from normlab.norms import Norm, get_norm_class
from normlab.norms.registry import check_norm_kwargs

# Keys of `StackConfig.norm_kwargs_by_position`: the block sublayers and the norms outside them.
POSITIONS: tuple[str, ...] = (*SUBLAYERS, "outside")


@dataclass
class StackConfig:
    """The fields every model has: its blocks' shape, norm and placement.

    Constructing one checks every field (ValueError naming the fix; TypeError for a norm
    argument the norm does not take), so a bad config fails before any model is built. Each
    fact is checked where it is defined: the block's shape by `blocks.check_shape`, the depth
    and the placement by `blocks.resolve_layout`, the norm by the norm registry.

    Attributes:
        depth, dim, heads, mlp_ratio: L blocks of width D with H heads and an MLP of D·mlp_ratio.
        norm, norm_kwargs: a registered norm name (`normlab.list_norms()`) and its arguments,
            used in every norm slot.
        norm_kwargs_by_position: arguments that override `norm_kwargs` for the norms of one
            position: "attn" (the attention sublayer's norms), "mlp" (the MLP sublayer's) and
            "outside" (the norms outside the blocks: final, embedding, patch). DyT's LLaMA
            recipe: {"attn": {"alpha_init": 0.8}, "mlp": {"alpha_init": 0.2},
            "outside": {"alpha_init": 0.2}}.
        placement, placement_kwargs: a scheme of `normlab.blocks.SCHEMES` and its options.
        dropout: embedding, attention and residual-branch dropout.
    """

    architecture: ClassVar[str]  # "decoder" | "encoder": selects DeepNorm's constants

    depth: int = 4
    dim: int = 128
    heads: int = 4
    mlp_ratio: float = 4.0
    norm: str = "layernorm"
    norm_kwargs: dict[str, Any] = field(default_factory=dict)
    norm_kwargs_by_position: dict[str, dict[str, Any]] = field(default_factory=dict)
    placement: str = "pre"
    placement_kwargs: dict[str, Any] = field(default_factory=dict)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        try:
            check_shape(self.dim, self.heads, self.mlp_ratio, self.dropout)
            resolve_layout(
                self.placement, self.depth, architecture=self.architecture,
                **self.placement_kwargs,
            )
            if not isinstance(self.norm, str):
                raise ValueError(f"norm must be a registered norm name, got {self.norm!r}")
            cls = get_norm_class(self.norm)  # ValueError listing the known norms
        except ValueError as error:
            raise ValueError(f"{type(self).__name__}: {error}") from None
        in_blocks, outside = self.position_kwargs()
        for kwargs in (*in_blocks.values(), outside):
            check_norm_kwargs(cls, kwargs)

    @property
    def has_qkv_norm(self) -> bool:
        """Whether a block of the placement normalizes q, k and v (HybridNorm)."""
        layout = resolve_layout(
            self.placement, self.depth, architecture=self.architecture, **self.placement_kwargs
        )
        return any(p.qkv_norm for p in layout.blocks)

    def position_kwargs(self) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """(the arguments of each sublayer's norms, of the norms outside the blocks):
        `norm_kwargs` updated by `norm_kwargs_by_position`."""
        by_position = self.norm_kwargs_by_position
        unknown = sorted(set(by_position) - set(POSITIONS))
        if unknown or not all(isinstance(v, Mapping) for v in by_position.values()):
            raise ValueError(
                f"{type(self).__name__}.norm_kwargs_by_position must map positions from "
                f"{POSITIONS} to argument dicts, got {by_position!r}"
            )
        kwargs = {p: {**self.norm_kwargs, **by_position.get(p, {})} for p in POSITIONS}
        return {s: kwargs[s] for s in SUBLAYERS}, kwargs["outside"]


def apply_norm(norm: Norm | None, x: Tensor, mask: Tensor | None = None) -> Tensor:
    """`norm(x, mask)`, or x where the scheme has no such norm."""
    return x if norm is None else norm(x, mask)


def count_params(module: nn.Module, exclude: Sequence[nn.Parameter] = ()) -> int:
    """The number of distinct parameters (tied ones once), less those in `exclude`."""
    excluded = {id(p) for p in exclude}
    return sum(p.numel() for p in module.parameters() if id(p) not in excluded)
