"""HuggingFace Llama: a Pre-RMSNorm decoder (RMSNorm with γ, no bias) with a SwiGLU MLP.

Block: x ← x + o_proj(attn(q/k/v_proj(input_layernorm(x))));
       x ← x + down_proj(silu(gate_proj(n)) · up_proj(n)), n = post_attention_layernorm(x);
then the final `norm` and `lm_head` (tied to embed_tokens only when the config says so).
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from normlab.surgery.adapters.base import Layout, NormSite, Port, tie
from normlab.surgery.adapters.hf import BaseAndHead, HFAdapter

ALREADY_RMS = (
    "llama already normalizes with RMSNorm: there is no mean subtraction to remove, so "
    "to_rmsnorm has nothing exact to do, and to_crmsnorm needs a zero-mean residual stream, "
    "which a model trained with RMSNorm does not have (its stream mean is not zero, so "
    "recentring it would change every RMS). Use fold_norms to fold the RMSNorm gains into the "
    "Linears that read them"
)


class LlamaAdapter(HFAdapter):
    name = "llama"
    classes: ClassVar[dict[str, BaseAndHead]] = {
        "LlamaModel": ("", None), "LlamaForCausalLM": ("model.", "lm_head")
    }
    kv_cache = True

    def layout(self, model: nn.Module) -> Layout:
        cls, (base, head) = self.model_class(model)
        sites: list[NormSite] = []
        writers = [Port(f"{base}embed_tokens", "embedding")]
        for i in range(model.config.num_hidden_layers):
            h = f"{base}layers.{i}."
            qkv = tuple(Port(f"{h}self_attn.{p}_proj", "linear") for p in "qkv")
            mlp = (Port(f"{h}mlp.gate_proj", "linear"), Port(f"{h}mlp.up_proj", "linear"))
            sites += [
                NormSite(h + "input_layernorm", "pre", qkv),
                NormSite(h + "post_attention_layernorm", "pre", mlp),
            ]
            writers += [Port(h + "self_attn.o_proj", "linear"), Port(h + "mlp.down_proj", "linear")]
        sites.append(NormSite(f"{base}norm", "final", (Port(head, "linear"),) if head else ()))
        return Layout(
            arch=f"llama ({cls})", norms=tuple(sites), writers=tuple(writers),
            ties=tie(model, head, f"{base}embed_tokens"), convert_refusal=ALREADY_RMS,
        )
