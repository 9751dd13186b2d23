"""HuggingFace adapters as data: an `HFSpec` names the modules, `HFAdapter` builds the layout.

A spec lists, for one `config.model_type`, the supported model classes (with the prefix of the
base model and the head's path), the paths of the blocks, and every norm site and stream writer
of one block relative to that block, plus the modules outside the blocks. The layout of a model
instance is the spec repeated over its `config.<num_layers>` blocks:

    register_adapter(HFAdapter(HFSpec(
        model_type="llama",
        classes={"LlamaModel": ("", None), "LlamaForCausalLM": ("model.", "lm_head")},
        layers="layers", num_layers="num_hidden_layers",
        norms=(NormSite("input_layernorm", "pre", linears("self_attn.q_proj", ...)), ...),
        writers=linears("self_attn.o_proj", "mlp.down_proj"),
        embeddings=(Port("embed_tokens", "embedding"),), final_norm="norm", tied="embed_tokens",
    )))

Nothing here imports `transformers`: models are matched by `config.model_type` and classes by
name, so `normlab.surgery` imports without it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from normlab.surgery.adapters.base import Adapter, Layout, NormSite, Port, linears, tie


@dataclass(frozen=True)
class HFSpec:
    """The module names of one HuggingFace architecture (paths without the base prefix).

    Attributes:
        model_type: the `config.model_type` this spec claims.
        classes: model class name -> (prefix of the base model, e.g. "model." or "", path of
            the head Linear or None).
        layers: the `nn.ModuleList` of blocks under the base model ("h", "layers", ...).
        num_layers: the config attribute holding the number of blocks.
        norms: every norm site of one block, paths relative to the block.
        writers: every module of one block whose output is added to the residual stream.
        embeddings: modules or parameters under the base model that write the stream.
        optional_embeddings: as `embeddings`, written only when the instance has them (a
            parameter that is None, such as ViT's mask token, is left out).
        embedding_norms: norm sites under the base model before the first block.
        final_norm: the norm after the last block, read by the head when it is a Linear.
        tied: the embedding whose weight the head may share.
        convert_refusal: why the exact Pre-LN → Pre-RMSNorm conversion does not apply, or None.
        refuse_when: config flag -> why the conversion does not apply when the flag is set.
        positions: the config attribute bounding the sequence length of the probe batch.
        kv_cache: the forward builds a cache, which the probe turns off (`use_cache=False`).
        inputs: what the probe batch is: "tokens" (input_ids) or "pixels" (pixel_values).
    """

    model_type: str
    classes: Mapping[str, tuple[str, str | None]]
    layers: str
    num_layers: str
    norms: tuple[NormSite, ...]
    writers: tuple[Port, ...] = ()
    embeddings: tuple[Port, ...] = ()
    optional_embeddings: tuple[Port, ...] = ()
    embedding_norms: tuple[NormSite, ...] = ()
    final_norm: str | None = None
    tied: str | None = None
    convert_refusal: str | None = None
    refuse_when: Mapping[str, str] = field(default_factory=dict)
    positions: str = "max_position_embeddings"
    kv_cache: bool = False
    inputs: Literal["tokens", "pixels"] = "tokens"


def _under(prefix: str, item: Port | NormSite) -> Any:
    """`item` with `prefix` prepended to its path (and to its readers' paths)."""
    if isinstance(item, NormSite):
        readers = tuple(_under(prefix, r) for r in item.readers)
        return dataclasses.replace(item, path=prefix + item.path, readers=readers)
    return dataclasses.replace(item, path=prefix + item.path)


def _present(model: nn.Module, path: str) -> bool:
    """Whether the module or parameter at `path` exists and is not None."""
    parent, _, leaf = path.rpartition(".")
    return getattr(model.get_submodule(parent), leaf, None) is not None


class HFAdapter(Adapter):
    """The adapter of the HuggingFace architecture that `spec` describes."""

    def __init__(self, spec: HFSpec) -> None:
        self.spec = spec
        self.name = spec.model_type

    def label(self) -> str:
        return f"HuggingFace model_type {self.spec.model_type!r}"

    def claims(self, model: nn.Module) -> bool:
        return getattr(getattr(model, "config", None), "model_type", None) == self.name

    def model_class(self, model: nn.Module) -> tuple[str, tuple[str, str | None]]:
        """(class name, (base prefix, head path)); ValueError naming the supported classes."""
        cls = type(model).__name__
        if cls not in self.spec.classes:
            raise ValueError(
                f"{self.name} adapter: unsupported model class {cls}; supported: "
                f"{', '.join(self.spec.classes)}"
            )
        return cls, self.spec.classes[cls]

    def layout(self, model: nn.Module, inputs: Any = None) -> Layout:
        s = self.spec
        cls, (base, head) = self.model_class(model)
        sites = [_under(base, n) for n in s.embedding_norms]
        writers = [_under(base, p) for p in s.embeddings]
        writers += [
            _under(base, p) for p in s.optional_embeddings if _present(model, base + p.path)
        ]
        for i in range(getattr(model.config, s.num_layers)):
            block = f"{base}{s.layers}.{i}."
            sites += [_under(block, n) for n in s.norms]
            writers += [_under(block, p) for p in s.writers]
        if s.final_norm is not None:
            # a model without a Linear head returns the final norm's output itself
            read = head is not None and isinstance(model.get_submodule(head), nn.Linear)
            sites.append(NormSite(base + s.final_norm, "final", linears(head) if read else ()))
        flags = [why for flag, why in s.refuse_when.items() if getattr(model.config, flag, False)]
        return Layout(
            arch=f"{self.name} ({cls})", norms=tuple(sites), writers=tuple(writers),
            ties=tie(model, head, base + s.tied) if s.tied else (),
            convert_refusal=flags[0] if flags else s.convert_refusal,
        )

    def probe_inputs(self, model: nn.Module, generator: torch.Generator) -> dict[str, Any]:
        """Two images, or token ids of shape (2, min(16, the longest sequence)) uniform over
        the vocabulary."""
        config = model.config
        if self.spec.inputs == "pixels":
            size = (2, config.num_channels, config.image_size, config.image_size)
            return {"pixel_values": torch.randn(size, generator=generator)}
        shape = (2, min(16, getattr(config, self.spec.positions)))
        ids = torch.randint(0, config.vocab_size, shape, generator=generator)
        return {"input_ids": ids, "use_cache": False} if self.spec.kv_cache else {"input_ids": ids}

    def output(self, model: nn.Module, inputs: Any) -> Tensor:
        """`logits` when the model has a head, else `last_hidden_state`."""
        out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
        return out["logits"] if "logits" in out else out["last_hidden_state"]

    def untie(self, model: nn.Module) -> None:
        model.config.tie_word_embeddings = False
