"""A small Vision Transformer (encoder) whose norm and placement are configuration.

    model = ViT(ViTConfig(norm="dyt", placement="pre", dual_patchnorm=True))
    logits, loss = model(images, targets)        # images: (B, C, H, W); targets: (B,) int64

Non-overlapping P×P patches, a linear patch embedding (with Dual PatchNorm's two norms when
asked), a class token or mean pooling, learned position embeddings, `depth` bidirectional blocks
laid out by the placement scheme, a final norm where the scheme has one, and a linear head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normlab.blocks import Block, resolve_layout
from normlab.blocks.hyper import run_stack
from normlab.blocks.init import init_block, init_embedding, init_linear
from normlab.models.common import StackConfig, apply_norm, count_params
from normlab.norms import make_norm


@dataclass
class ViTConfig(StackConfig):
    """The ViT's shape, norm and placement (the shared fields: `StackConfig`; width 64 here).

    Attributes:
        image_size, patch_size, channels: square H = W = image_size, divisible by patch_size P.
        num_classes: the classifier's outputs.
        dual_patchnorm: normalize the flattened patches (width P²·C) before the patch
            embedding and its output (width D) after, with `norm` ("Dual PatchNorm", Kumar,
            Dehghani, Houlsby, TMLR 2023; the paper uses LayerNorm).
        pool: "cls" (a class token) or "mean" (the mean of the patch tokens).
    """

    architecture: ClassVar[str] = "encoder"

    dim: int = 64
    image_size: int = 8
    patch_size: int = 2
    channels: int = 1
    num_classes: int = 10
    dual_patchnorm: bool = False
    pool: Literal["cls", "mean"] = "cls"

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "channels", "num_classes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ViTConfig.{name} must be a positive int, got {value!r}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"ViTConfig: image_size={self.image_size} must be divisible by "
                f"patch_size={self.patch_size}"
            )
        if self.pool not in ("cls", "mean"):
            raise ValueError(f"ViTConfig.pool must be 'cls' or 'mean', got {self.pool!r}")
        super().__post_init__()

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def patch_dim(self) -> int:
        return self.patch_size**2 * self.channels


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, N, P·P·C): row-major patches, each flattened as (P, P, C)."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


class ViT(nn.Module):
    """A Vision Transformer classifier; see `ViTConfig` and `normlab.blocks.SCHEMES`."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.layout = resolve_layout(
            c.placement, c.depth, architecture="encoder", **c.placement_kwargs
        )
        in_blocks, outside = c.position_kwargs()
        dual = c.dual_patchnorm
        self.patch_norm_in = make_norm(c.norm, c.patch_dim, **outside) if dual else None
        self.patch_embed = nn.Linear(c.patch_dim, c.dim)
        self.patch_norm_out = make_norm(c.norm, c.dim, **outside) if dual else None
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim)) if c.pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.zeros(1, c.num_patches + (c.pool == "cls"), c.dim))
        self.embed_norm = make_norm(c.norm, c.dim, **outside) if self.layout.embed_norm else None
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            Block(
                c.dim, c.heads, placement, norm=c.norm, sublayer_norm_kwargs=in_blocks,
                mlp_ratio=c.mlp_ratio, causal=False, dropout=c.dropout,
            )
            for placement in self.layout.blocks
        )
        self.final_norm = make_norm(c.norm, c.dim, **outside) if self.layout.final_norm else None
        self.head = nn.Linear(c.dim, c.num_classes)
        self.init_weights()

    def forward(
        self, images: Tensor, targets: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Logits (B, num_classes) and, given targets (B,), the mean cross-entropy."""
        self._check_inputs(images, targets)
        patches = patchify(images, self.config.patch_size)  # (B, N, P·P·C)
        x = self.patch_embed(apply_norm(self.patch_norm_in, patches))
        x = apply_norm(self.patch_norm_out, x)  # (B, N, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        x = self.drop(apply_norm(self.embed_norm, x + self.pos_embed))  # (B, N(+1), D)
        x = run_stack(self.blocks, x, None, self.layout.streams)
        x = apply_norm(self.final_norm, x)
        logits = self.head(x[:, 0] if self.cls_token is not None else x.mean(1))
        loss = None if targets is None else F.cross_entropy(logits.float(), targets)
        return logits, loss

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialize the weights as the placement scheme's paper does (`Layout.init`).

        * default: every Linear (head included), the class token and the position embeddings
          ~ N(0, 0.02), biases 0; the patch embedding ~ N(0, 1/(P²·C)) (LeCun normal, as
          big_vision's ViT); ReZero/SkipInit/GPAS gates 0.
        * deepnorm (encoder constants): xavier_normal(gain=β) for v_proj, out_proj, fc1, fc2,
          xavier_normal(gain=1) for q_proj, k_proj and the other Linears, β = (8L)^{-1/4}.
        * tfixup (encoder rule): Xavier init, then v_proj, out_proj, fc1, fc2 × 0.67·L^{-1/4}
          and the patch embedding × (9L)^{-1/4} (the embedding factor; the patch embedding is
          a Linear here, so there is no √D scale); class token and positions ~ N(0, D^{-1/2}).
        * norms keep their constructor init.
        """
        spec = self.layout.init
        # LeCun normal in the "normal" recipe, as big_vision's patch embedding: N(0, 0.02) on a
        # few pixels would make the patch tokens vanish next to the position embeddings.
        init_linear(self.patch_embed, spec, spec.embed_gain, std=self.config.patch_dim**-0.5)
        if self.cls_token is not None:
            init_embedding(self.cls_token, spec)
        init_embedding(self.pos_embed, spec)
        for block in self.blocks:
            init_block(block, spec)
        init_linear(self.head, spec)

    def num_params(self, non_embedding: bool = False) -> int:
        """The number of parameters; `non_embedding` drops the position embeddings."""
        return count_params(self, exclude=[self.pos_embed] if non_embedding else [])

    def _check_inputs(self, images: Tensor, targets: Tensor | None) -> None:
        c = self.config
        expected = (c.channels, c.image_size, c.image_size)
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1:] != expected:
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            shape = ", ".join(map(str, expected))
            raise ValueError(f"ViT: images must have shape (B, {shape}), got {got}")
        if not images.is_floating_point():
            raise TypeError(f"ViT: images must be floating point, got {images.dtype}")
        bad_targets = targets is not None and (
            targets.shape != images.shape[:1] or targets.dtype != torch.long
        )
        if bad_targets:
            raise ValueError(
                f"ViT: targets must be an int64 tensor of shape ({images.shape[0]},), got "
                f"{targets.dtype} {tuple(targets.shape)}"
            )
