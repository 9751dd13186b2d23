"""What the HuggingFace adapters share: the model-class check, the probe batch, the output and
the config flag recorded when the head is untied.

A subclass names its supported classes in `classes` (class name -> what its `layout` needs,
e.g. the prefix of the base model and the head path), the config attribute that bounds the
sequence length of a token model in `positions`, and whether the forward builds a KV cache.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from normlab.surgery.adapters.base import Adapter

# a `classes` entry of the decoder/ViT adapters: (prefix of the base model, head path or None)
BaseAndHead = tuple[str, str | None]


class HFAdapter(Adapter):
    """Base class of the HuggingFace adapters (`transformers` models, matched by model_type)."""

    classes: ClassVar[dict[str, Any]]
    positions: ClassVar[str] = "max_position_embeddings"
    kv_cache: ClassVar[bool] = False  # a decoder whose forward builds a cache the probe skips

    def model_class(self, model: nn.Module) -> tuple[str, Any]:
        """(class name, its `classes` entry); ValueError naming the supported classes."""
        cls = type(model).__name__
        if cls not in self.classes:
            raise ValueError(
                f"{self.name} adapter: unsupported model class {cls}; supported: "
                f"{', '.join(self.classes)}"
            )
        return cls, self.classes[cls]

    def probe_inputs(self, model: nn.Module, generator: torch.Generator) -> dict[str, Any]:
        """Token ids of shape (2, min(16, the longest sequence)), uniform over the vocabulary."""
        config = model.config
        shape = (2, min(16, getattr(config, self.positions)))
        ids = torch.randint(0, config.vocab_size, shape, generator=generator)
        return {"input_ids": ids, "use_cache": False} if self.kv_cache else {"input_ids": ids}

    def output(self, model: nn.Module, inputs: Any) -> Tensor:
        """`logits` when the model has a head, else `last_hidden_state`."""
        out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
        return out["logits"] if "logits" in out else out["last_hidden_state"]

    def untie(self, model: nn.Module) -> None:
        model.config.tie_word_embeddings = False
