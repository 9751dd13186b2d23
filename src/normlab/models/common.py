"""What the GPT and the ViT share: the block-stack config, norm construction by position,
counting."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor, nn

from normlab.blocks import resolve_layout
from normlab.norms import Norm, get_norm_class


def check_config(
    name: str, *, norm: str, placement: str, placement_kwargs: Mapping[str, Any], depth: int,
    dim: int, heads: int, mlp_ratio: float, dropout: float,
    dyt_alpha_init: Sequence[float] | None, architecture: str,
) -> tuple[float, float, float] | None:
    """Check a model config; return `dyt_alpha_init` as a tuple. Errors name the fix."""
    for key, value in (("depth", depth), ("dim", dim), ("heads", heads)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}.{key} must be a positive int, got {value!r}")
    if dim % heads:
        raise ValueError(f"{name}: dim={dim} must be divisible by heads={heads}")
    if not mlp_ratio > 0:
        raise ValueError(f"{name}.mlp_ratio must be > 0, got {mlp_ratio!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{name}.dropout must be in [0, 1), got {dropout!r}")
    if not isinstance(norm, str):
        raise TypeError(f"{name}.norm must be a registered norm name, got {norm!r}")
    get_norm_class(norm)  # ValueError listing the known norms
    resolve_layout(placement, depth, architecture=architecture, **placement_kwargs)
    if dyt_alpha_init is None:
        return None
    if norm.lower() != "dyt":
        raise ValueError(f"{name}.dyt_alpha_init is for norm='dyt', got norm={norm!r}")
    alphas = tuple(float(a) for a in dyt_alpha_init)
    if len(alphas) != 3:
        raise ValueError(
            f"{name}.dyt_alpha_init must be (attn, ffn, final), e.g. (0.8, 0.2, 0.2); "
            f"got {dyt_alpha_init!r}"
        )
    return alphas


@dataclass
class StackConfig:
    """The fields every model has: its blocks' shape, norm and placement.

    Attributes:
        depth, dim, heads, mlp_ratio: L blocks of width D with H heads and an MLP of D·mlp_ratio.
        norm, norm_kwargs: a registered norm name (`normlab.list_norms()`) and its arguments,
            used in every norm slot.
        placement, placement_kwargs: a scheme of `normlab.blocks.SCHEMES` and its options.
        dropout: embedding, attention and residual-branch dropout.
        dyt_alpha_init: (attn, ffn, final) α₀ of DyT by position, the LLaMA recipe of
            "Transformers without Normalization" (e.g. (0.8, 0.2, 0.2) at 7B); norm="dyt" only.
    """

    architecture: ClassVar[str]  # "decoder" | "encoder": selects DeepNorm's constants

    depth: int = 4
    dim: int = 128
    heads: int = 4
    mlp_ratio: float = 4.0
    norm: str = "layernorm"
    norm_kwargs: dict[str, Any] = field(default_factory=dict)
    placement: str = "pre"
    placement_kwargs: dict[str, Any] = field(default_factory=dict)
    dropout: float = 0.0
    dyt_alpha_init: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        self.dyt_alpha_init = check_config(
            type(self).__name__, norm=self.norm, placement=self.placement,
            placement_kwargs=self.placement_kwargs, depth=self.depth, dim=self.dim,
            heads=self.heads, mlp_ratio=self.mlp_ratio, dropout=self.dropout,
            dyt_alpha_init=self.dyt_alpha_init, architecture=self.architecture,
        )


def norm_kwargs_by_position(
    norm_kwargs: Mapping[str, Any], dyt_alpha_init: tuple[float, float, float] | None
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(per-sublayer kwargs for the blocks, kwargs for the embedding/final norms).

    With `dyt_alpha_init = (a_attn, a_ffn, a_final)` (the DyT LLaMA recipe: separate α₀ for the
    attention-input, FFN-input and final norms), every norm of the attention sublayer starts at
    a_attn, every norm of the MLP sublayer at a_ffn, and the norms outside the blocks (final,
    embedding, patch) at a_final.
    """
    if dyt_alpha_init is None:
        return {}, dict(norm_kwargs)
    attn, ffn, final = dyt_alpha_init
    sublayers = {"attn": {"alpha_init": attn}, "mlp": {"alpha_init": ffn}}
    return sublayers, {**norm_kwargs, "alpha_init": final}


def apply_norm(norm: Norm | None, x: Tensor, mask: Tensor | None = None) -> Tensor:
    """`norm(x, mask)`, or x where the scheme has no such norm."""
    return x if norm is None else norm(x, mask)


def count_params(module: nn.Module, exclude: Sequence[nn.Parameter] = ()) -> int:
    """The number of distinct parameters (tied ones once), less those in `exclude`."""
    excluded = {id(p) for p in exclude}
    return sum(p.numel() for p in module.parameters() if id(p) not in excluded)
