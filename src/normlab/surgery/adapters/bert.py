"""HuggingFace BERT (and sentence encoders built on it, e.g. all-MiniLM-L6-v2): Post-LN.

Every LayerNorm sits after a residual add, so its output *is* the residual stream:
embeddings.LayerNorm(word + position + token type), then per layer
x ← LN(x + attention.output.dense(attn(x))), x ← LN(x + output.dense(act(intermediate(x)))).
Nothing folds and the Pre-RMSNorm conversion does not apply; swap_norms works.
"""

from __future__ import annotations

from normlab.surgery.adapters.base import NormSite, register_adapter
from normlab.surgery.adapters.hf import HFAdapter, HFSpec

POST_LN = (
    "bert is a Post-LN model: each LayerNorm output is the residual stream itself (it is added "
    "to the next branch output), so its γ/β cannot move into a Linear and the stream has no "
    "zero-mean invariant; the exact Pre-RMSNorm conversion applies to Pre-LN models only. "
    "Use swap_norms(..., approximate=True) to try another norm"
)
WHY = "Post-LN: the LayerNorm output is the residual stream"

register_adapter(HFAdapter(HFSpec(
    model_type="bert",
    classes={
        "BertModel": ("", None), "BertForMaskedLM": ("bert.", None),
        "BertForSequenceClassification": ("bert.", None),
    },
    layers="encoder.layer",
    num_layers="num_hidden_layers",
    norms=(
        NormSite("attention.output.LayerNorm", "post", why=WHY),
        NormSite("output.LayerNorm", "post", why=WHY),
    ),
    embedding_norms=(NormSite("embeddings.LayerNorm", "post", why=WHY),),
    convert_refusal=POST_LN,
)))
