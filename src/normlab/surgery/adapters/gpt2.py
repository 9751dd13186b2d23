"""HuggingFace GPT-2: a Pre-LN decoder with fused Q/K/V in a Conv1D and a tied LM head.

Block: x ← x + c_proj(attn(c_attn(ln_1(x)))); x ← x + mlp.c_proj(act(c_fc(ln_2(x)))); then ln_f.
Conv1D stores its weight as (in, out). The stream is written by wte, wpe (and wte again for
token_type_ids), every attn.c_proj and every mlp.c_proj.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from normlab.surgery.adapters.base import Layout, NormSite, Port, tie
from normlab.surgery.adapters.hf import BaseAndHead, HFAdapter


class GPT2Adapter(HFAdapter):
    name = "gpt2"
    classes: ClassVar[dict[str, BaseAndHead]] = {
        "GPT2Model": ("", None), "GPT2LMHeadModel": ("transformer.", "lm_head")
    }
    positions = "n_positions"
    kv_cache = True

    def layout(self, model: nn.Module) -> Layout:
        cls, (base, head) = self.model_class(model)
        config = model.config
        sites: list[NormSite] = []
        writers = [Port(f"{base}wte", "embedding"), Port(f"{base}wpe", "embedding")]
        for i in range(config.n_layer):
            h = f"{base}h.{i}."
            sites.append(NormSite(h + "ln_1", "pre", (Port(h + "attn.c_attn", "conv1d"),)))
            sites.append(NormSite(h + "ln_2", "pre", (Port(h + "mlp.c_fc", "conv1d"),)))
            writers += [Port(h + "attn.c_proj", "conv1d"), Port(h + "mlp.c_proj", "conv1d")]
        readers = (Port(head, "linear"),) if head else ()
        sites.append(NormSite(f"{base}ln_f", "final", readers))
        refusal = None
        if config.add_cross_attention:
            refusal = (
                "gpt2 with cross-attention: ln_cross_attn and the encoder states are not covered "
                "by the exact conversion"
            )
        return Layout(
            arch=f"gpt2 ({cls})", norms=tuple(sites), writers=tuple(writers),
            ties=tie(model, head, f"{base}wte"), convert_refusal=refusal,
        )
