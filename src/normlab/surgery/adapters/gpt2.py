"""HuggingFace GPT-2: a Pre-LN decoder with fused Q/K/V in a Conv1D and a tied LM head.

Block: x ← x + c_proj(attn(c_attn(ln_1(x)))); x ← x + mlp.c_proj(act(c_fc(ln_2(x)))); then ln_f.
Conv1D stores its weight as (in, out). The stream is written by wte, wpe (and wte again for
token_type_ids), every attn.c_proj and every mlp.c_proj.
"""

from __future__ import annotations

from normlab.surgery.adapters.base import NormSite, Port, register_adapter
from normlab.surgery.adapters.hf import HFAdapter, HFSpec

register_adapter(HFAdapter(HFSpec(
    model_type="gpt2",
    classes={"GPT2Model": ("", None), "GPT2LMHeadModel": ("transformer.", "lm_head")},
    layers="h",
    num_layers="n_layer",
    norms=(
        NormSite("ln_1", "pre", (Port("attn.c_attn", "conv1d"),)),
        NormSite("ln_2", "pre", (Port("mlp.c_fc", "conv1d"),)),
    ),
    writers=(Port("attn.c_proj", "conv1d"), Port("mlp.c_proj", "conv1d")),
    embeddings=(Port("wte", "embedding"), Port("wpe", "embedding")),
    final_norm="ln_f",
    tied="wte",
    refuse_when={
        "add_cross_attention": "gpt2 with cross-attention: ln_cross_attn and the encoder "
        "states are not covered by the exact conversion",
    },
    positions="n_positions",
    kv_cache=True,
)))
