"""HuggingFace GPT-2: a Pre-LN decoder with fused Q/K/V in a Conv1D and a tied LM head.

Block: x ← x + c_proj(attn(c_attn(ln_1(x)))); x ← x + mlp.c_proj(act(c_fc(ln_2(x)))); then ln_f.
Conv1D stores its weight as (in, out). The stream is written by wte, wpe (and wte again for
token_type_ids), every attn.c_proj and every mlp.c_proj.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from normlab.surgery.adapters.base import (
    Adapter,
    Layout,
    NormSite,
    Port,
    hf_output,
    random_token_ids,
)

# model class -> (prefix of the GPT2Model, the Linear head reading ln_f or None)
_CLASSES = {
    "GPT2Model": ("", None),
    "GPT2LMHeadModel": ("transformer.", "lm_head"),
}


class GPT2Adapter(Adapter):
    name = "gpt2"

    def layout(self, model: nn.Module) -> Layout:
        cls = type(model).__name__
        if cls not in _CLASSES:
            raise ValueError(
                f"gpt2 adapter: unsupported model class {cls}; supported: {', '.join(_CLASSES)}"
            )
        base, head = _CLASSES[cls]
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
        ties = ()
        if head == "lm_head" and model.lm_head.weight is model.transformer.wte.weight:
            ties = (("lm_head.weight", "transformer.wte.weight"),)
        refusal = None
        if config.add_cross_attention:
            refusal = (
                "gpt2 with cross-attention: ln_cross_attn and the encoder states are not covered "
                "by the exact conversion"
            )
        return Layout(
            arch=f"gpt2 ({cls})", norms=tuple(sites), writers=tuple(writers), ties=ties,
            convert_refusal=refusal,
        )

    def probe_inputs(self, model: nn.Module, generator: torch.Generator) -> dict[str, Any]:
        config = model.config
        ids = random_token_ids(config.vocab_size, config.n_positions, generator)
        return {"input_ids": ids, "use_cache": False}

    def output(self, model: nn.Module, inputs: Any) -> Tensor:
        return hf_output(model, inputs)

    def untie(self, model: nn.Module) -> None:
        model.config.tie_word_embeddings = False
