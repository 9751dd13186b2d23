"""normlab's own GPT, Llama and ViT (normlab.models), any norm and any placement scheme.

Every block slot is read from its `Placement`: a "pre" norm feeds q/k/v_proj (attention) or fc1
(MLP; with the gate of the Llama's SwiGLU), scaled by `input_scale`; the MLP "hidden" norm feeds
fc2; "branch_out" and "post" norms and the embedding norm write the stream (nothing folds). The
final norm feeds the LM head (GPT, Llama) or the classifier through [CLS] or the token mean
(ViT; both commute with a per-channel affine).
Dual PatchNorm's first norm feeds the patch embedding, its second writes the stream.

The exact Pre-(C)RMSNorm conversion is offered when every block is plain Pre-LN (one "pre" norm
per sublayer, no gates, no head scales) with a final norm and no embedding norm: the "pre"
scheme, and "lns", whose constant input scale s = 1/√ℓ stays in the block while the readers
take γ and s·β.
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
    linears,
    register_adapter,
    tie,
)

_STREAM = "its output is added to or is the residual stream"


def _block_sites(prefix: str, block: nn.Module) -> tuple[list[NormSite], list[Port], str | None]:
    """Norm sites and stream writers of one block; a reason if the block is not plain Pre-LN."""
    p = block.placement

    def lin(*names: str) -> tuple[Port, ...]:
        return linears(*(prefix + n for n in names))

    mlp = ("mlp.fc1", "mlp.gate") if hasattr(block.mlp, "gate") else ("mlp.fc1",)
    readers = {"attn": lin("attn.q_proj", "attn.k_proj", "attn.v_proj"), "mlp": lin(*mlp)}
    sites = []
    for sub in ("attn", "mlp"):
        for slot in p.slots(sub):
            if slot == "pre":
                path = f"{prefix}norms.{sub}_pre"
                sites.append(NormSite(path, "pre", readers[sub], input_scale=p.input_scale))
            elif slot == "hidden":
                sites.append(NormSite(prefix + "mlp.norm", "inner", lin("mlp.fc2")))
            else:
                sites.append(NormSite(f"{prefix}norms.{sub}_{slot}", "post", why=_STREAM))
    writers = [Port(prefix + "attn.out_proj", "linear"), Port(prefix + "mlp.fc2", "linear")]
    plain = p.attn == ("pre",) and p.mlp == ("pre",) and not p.gates and not p.head_scale
    return sites, writers, None if plain else "a block other than plain Pre-LN"


class NormlabAdapter(Adapter):
    name = "normlab"
    classes = ("GPT", "Llama", "ViT")
    language_models = ("GPT", "Llama")

    def label(self) -> str:
        return " and ".join(f"normlab {c}" for c in self.classes)

    def claims(self, model: nn.Module) -> bool:
        cls = type(model)
        return cls.__module__.startswith("normlab.models") and cls.__name__ in self.classes

    def layout(self, model: nn.Module, inputs: Any = None) -> Layout:
        is_gpt = type(model).__name__ in self.language_models
        sites: list[NormSite] = []
        if is_gpt:
            writers = [Port(name, "embedding") for name in ("wte", "wpe")
                       if getattr(model, name, None) is not None]
        else:
            writers = [Port("patch_embed", "linear"), Port("pos_embed", "parameter")]
            if model.cls_token is not None:
                writers.append(Port("cls_token", "parameter"))
            if model.patch_norm_in is not None:
                sites.append(NormSite("patch_norm_in", "inner", (Port("patch_embed", "linear"),)))
                sites.append(NormSite("patch_norm_out", "post", why=_STREAM))
        if model.embed_norm is not None:
            sites.append(NormSite("embed_norm", "post", why=_STREAM))
        reasons = set()
        for i, block in enumerate(model.blocks):
            block_sites, block_writers, reason = _block_sites(f"blocks.{i}.", block)
            sites += block_sites
            writers += block_writers
            if reason:
                reasons.add(reason)
        head = "lm_head" if is_gpt else "head"
        if model.final_norm is not None:
            sites.append(NormSite("final_norm", "final", (Port(head, "linear"),)))
        scheme = model.layout.scheme
        refusal = None
        if reasons or model.embed_norm is not None or model.final_norm is None:
            refusal = (
                f"placement {scheme!r} is not plain Pre-LN (norms outside the block inputs, "
                f"gates or scales on the stream); the exact conversion needs scheme 'pre' "
                f"(or 'lns', Pre-LN with a constant scale on the norm outputs)"
            )
        return Layout(
            arch=f"normlab {type(model).__name__} (placement {scheme!r})",
            norms=tuple(sites), writers=tuple(writers),
            ties=tie(model, head, "wte") if is_gpt else (), convert_refusal=refusal,
        )

    def probe_inputs(self, model: nn.Module, generator: torch.Generator) -> dict[str, Any]:
        c = model.config
        if type(model).__name__ in self.language_models:
            length = min(16, c.block_size)
            return {"idx": torch.randint(0, c.vocab_size, (2, length), generator=generator)}
        size = (2, c.channels, c.image_size, c.image_size)
        return {"images": torch.randn(size, generator=generator)}

    def output(self, model: nn.Module, inputs: Any) -> Tensor:
        logits, _ = model(**inputs) if isinstance(inputs, dict) else model(inputs)
        return logits

    def untie(self, model: nn.Module) -> None:
        model.config.tie_embeddings = False


register_adapter(NormlabAdapter())
