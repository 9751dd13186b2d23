"""HuggingFace BERT (and sentence encoders built on it, e.g. all-MiniLM-L6-v2): Post-LN.

Every LayerNorm sits after a residual add, so its output *is* the residual stream:
embeddings.LayerNorm(word + position + token type), then per layer
x ← LN(x + attention.output.dense(attn(x))), x ← LN(x + output.dense(act(intermediate(x)))).
Nothing folds and the Pre-RMSNorm conversion does not apply; swap_norms works.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from normlab.surgery.adapters.base import Layout, NormSite
from normlab.surgery.adapters.hf import HFAdapter

POST_LN = (
    "bert is a Post-LN model: each LayerNorm output is the residual stream itself (it is added "
    "to the next branch output), so its γ/β cannot move into a Linear and the stream has no "
    "zero-mean invariant; the exact Pre-RMSNorm conversion applies to Pre-LN models only. "
    "Use swap_norms(..., approximate=True) to try another norm"
)


class BertAdapter(HFAdapter):
    name = "bert"
    # model class -> prefix of the BertModel
    classes: ClassVar[dict[str, str]] = {
        "BertModel": "", "BertForMaskedLM": "bert.", "BertForSequenceClassification": "bert."
    }

    def layout(self, model: nn.Module) -> Layout:
        cls, base = self.model_class(model)
        why = "Post-LN: the LayerNorm output is the residual stream"
        sites = [NormSite(f"{base}embeddings.LayerNorm", "post", why=why)]
        for i in range(model.config.num_hidden_layers):
            layer = f"{base}encoder.layer.{i}."
            sites += [
                NormSite(layer + "attention.output.LayerNorm", "post", why=why),
                NormSite(layer + "output.LayerNorm", "post", why=why),
            ]
        return Layout(arch=f"bert ({cls})", norms=tuple(sites), convert_refusal=POST_LN)
