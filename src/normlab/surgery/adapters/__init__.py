"""Adapters: one file per architecture, chosen by `config.model_type` (HuggingFace) or by class.

    get_adapter(model)   # ValueError listing the supported architectures if none fits

A new architecture is a new file with an `Adapter` subclass (`hf.HFAdapter` for HuggingFace
models) and one line in `_HF` (or `_NORMLAB`). The HuggingFace adapters import nothing from
`transformers` at module level, so `normlab.surgery` imports without it.
"""

from __future__ import annotations

import importlib

from torch import nn

from normlab.surgery.adapters.base import Adapter, Layout, NormSite, Port

# model_type -> "module:Class", imported on first use
_HF = {
    "gpt2": "gpt2:GPT2Adapter",
    "llama": "llama:LlamaAdapter",
    "bert": "bert:BertAdapter",
    "vit": "vit:ViTAdapter",
}
# normlab model class name -> "module:Class"
_NORMLAB = {"GPT": "normlab_models:NormlabAdapter", "ViT": "normlab_models:NormlabAdapter"}


def _load(target: str) -> Adapter:
    module, cls = target.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)()


def supported() -> list[str]:
    """The architectures an adapter exists for."""
    return [f"HuggingFace model_type {t!r}" for t in _HF] + [
        f"normlab {c}" for c in _NORMLAB
    ]


def find_adapter(model: nn.Module) -> Adapter | None:
    """The adapter for `model` (by `config.model_type` for HuggingFace models, else by class),
    or None."""
    cls = type(model)
    if cls.__module__.startswith("normlab.models") and cls.__name__ in _NORMLAB:
        return _load(_NORMLAB[cls.__name__])
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return _load(_HF[model_type]) if model_type in _HF else None


def get_adapter(model: nn.Module) -> Adapter:
    """As `find_adapter`, but a model without an adapter is a ValueError listing the supported."""
    adapter = find_adapter(model)
    if adapter is not None:
        return adapter
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    cls = type(model)
    what = f"model_type {model_type!r}" if model_type else f"class {cls.__name__}"
    raise ValueError(
        f"no surgery adapter for {what}; supported: {', '.join(supported())}. "
        f"A new architecture needs a new file in normlab/surgery/adapters/"
    )


__all__ = ["Adapter", "Layout", "NormSite", "Port", "find_adapter", "get_adapter", "supported"]
