"""HuggingFace ViT: a Pre-LN encoder over patches plus a [CLS] token.

Block: x ← x + o_proj(attn(q/k/v_proj(layernorm_before(x)))); x ← x + fc2(act(fc1(
layernorm_after(x)))); then the final `layernorm`. The stream is written by the patch
projection (Conv2d), the cls token, the position table (and the mask token when present), every
o_proj and every fc2. ViTForImageClassification's classifier reads the final norm at [CLS].
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from normlab.surgery.adapters.base import Layout, NormSite, Port
from normlab.surgery.adapters.hf import BaseAndHead, HFAdapter


class ViTAdapter(HFAdapter):
    name = "vit"
    classes: ClassVar[dict[str, BaseAndHead]] = {
        "ViTModel": ("", None), "ViTForImageClassification": ("vit.", "classifier")
    }

    def layout(self, model: nn.Module) -> Layout:
        cls, (base, head) = self.model_class(model)
        vit = model.vit if base else model
        emb = f"{base}embeddings."
        writers = [
            Port(emb + "patch_embeddings.projection", "conv2d"),
            Port(emb + "cls_token", "parameter"),
            Port(emb + "position_embeddings", "parameter"),
        ]
        if vit.embeddings.mask_token is not None:
            writers.append(Port(emb + "mask_token", "parameter"))
        sites: list[NormSite] = []
        for i in range(model.config.num_hidden_layers):
            h = f"{base}layers.{i}."
            qkv = tuple(Port(f"{h}attention.{p}_proj", "linear") for p in "qkv")
            sites += [
                NormSite(h + "layernorm_before", "pre", qkv),
                NormSite(h + "layernorm_after", "pre", (Port(h + "mlp.fc1", "linear"),)),
            ]
            writers += [Port(h + "attention.o_proj", "linear"), Port(h + "mlp.fc2", "linear")]
        # ViTModel returns the final norm's output itself: no reader may take its affine.
        has_head = head is not None and isinstance(model.classifier, nn.Linear)
        readers = (Port(head, "linear"),) if has_head else ()
        sites.append(NormSite(f"{base}layernorm", "final", readers))
        return Layout(arch=f"vit ({cls})", norms=tuple(sites), writers=tuple(writers))

    def probe_inputs(self, model: nn.Module, generator: torch.Generator) -> dict[str, Any]:
        c = model.config
        size = (2, c.num_channels, c.image_size, c.image_size)
        return {"pixel_values": torch.randn(size, generator=generator)}
