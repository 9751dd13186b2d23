"""HuggingFace Llama: a Pre-RMSNorm decoder (RMSNorm with γ, no bias) with a SwiGLU MLP.

Block: x ← x + o_proj(attn(q/k/v_proj(input_layernorm(x))));
       x ← x + down_proj(silu(gate_proj(n)) · up_proj(n)), n = post_attention_layernorm(x);
then the final `norm` and `lm_head` (tied to embed_tokens only when the config says so).
"""

from __future__ import annotations

from normlab.surgery.adapters.base import NormSite, Port, linears, register_adapter
from normlab.surgery.adapters.hf import HFAdapter, HFSpec

ALREADY_RMS = (
    "llama already normalizes with RMSNorm: there is no mean subtraction to remove, so "
    "to_rmsnorm has nothing exact to do, and to_crmsnorm needs a zero-mean residual stream, "
    "which a model trained with RMSNorm does not have (its stream mean is not zero, so "
    "recentring it would change every RMS). Use fold_norms to fold the RMSNorm gains into the "
    "Linears that read them"
)

register_adapter(HFAdapter(HFSpec(
    model_type="llama",
    classes={"LlamaModel": ("", None), "LlamaForCausalLM": ("model.", "lm_head")},
    layers="layers",
    num_layers="num_hidden_layers",
    norms=(
        NormSite("input_layernorm", "pre",
                 linears("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
        NormSite("post_attention_layernorm", "pre", linears("mlp.gate_proj", "mlp.up_proj")),
    ),
    writers=linears("self_attn.o_proj", "mlp.down_proj"),
    embeddings=(Port("embed_tokens", "embedding"),),
    final_norm="norm",
    tied="embed_tokens",
    convert_refusal=ALREADY_RMS,
    kv_cache=True,
)))
