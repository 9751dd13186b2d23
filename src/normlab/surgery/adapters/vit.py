"""HuggingFace ViT: a Pre-LN encoder over patches plus a [CLS] token.

Block: x ← x + o_proj(attn(q/k/v_proj(layernorm_before(x)))); x ← x + fc2(act(fc1(
layernorm_after(x)))); then the final `layernorm`. The stream is written by the patch
projection (Conv2d), the cls token, the position table (and the mask token when present), every
o_proj and every fc2. ViTForImageClassification's classifier reads the final norm at [CLS].
"""

from __future__ import annotations

from normlab.surgery.adapters.base import NormSite, Port, linears, register_adapter
from normlab.surgery.adapters.hf import HFAdapter, HFSpec

register_adapter(HFAdapter(HFSpec(
    model_type="vit",
    classes={"ViTModel": ("", None), "ViTForImageClassification": ("vit.", "classifier")},
    layers="layers",
    num_layers="num_hidden_layers",
    norms=(
        NormSite("layernorm_before", "pre",
                 linears("attention.q_proj", "attention.k_proj", "attention.v_proj")),
        NormSite("layernorm_after", "pre", linears("mlp.fc1")),
    ),
    writers=linears("attention.o_proj", "mlp.fc2"),
    embeddings=(
        Port("embeddings.patch_embeddings.projection", "conv2d"),
        Port("embeddings.cls_token", "parameter"),
        Port("embeddings.position_embeddings", "parameter"),
    ),
    optional_embeddings=(Port("embeddings.mask_token", "parameter"),),
    final_norm="layernorm",
    inputs="pixels",
)))
