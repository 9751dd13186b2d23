"""Adapters: one file per architecture, each registering itself with `register_adapter`.

    get_adapter(model)   # ValueError listing the supported architectures if none fits

A HuggingFace architecture is a short file registering an `HFAdapter(HFSpec(...))`, the module
names of its blocks as data (`hf.py`); importing this package imports every file in it, so a new
file needs no other edit. The HuggingFace adapters import nothing from `transformers`, so
`normlab.surgery` imports without it.
"""

from __future__ import annotations

from torch import nn

from normlab.registry import import_submodules
from normlab.surgery.adapters.base import (
    ADAPTERS,
    Adapter,
    Layout,
    NormSite,
    Port,
    linears,
    register_adapter,
)
from normlab.surgery.adapters.hf import HFAdapter, HFSpec

import_submodules(__name__, __path__)


def supported() -> list[str]:
    """The architectures an adapter exists for."""
    return [adapter.label() for adapter in ADAPTERS.values()]


def find_adapter(model: nn.Module) -> Adapter | None:
    """The registered adapter that claims `model`, or None."""
    return next((a for a in ADAPTERS.values() if a.claims(model)), None)


def get_adapter(model: nn.Module) -> Adapter:
    """As `find_adapter`, but a model without an adapter is a ValueError listing the supported."""
    adapter = find_adapter(model)
    if adapter is not None:
        return adapter
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    what = f"model_type {model_type!r}" if model_type else f"class {type(model).__name__}"
    raise ValueError(
        f"no surgery adapter for {what}; supported: {', '.join(supported())}. "
        f"A new architecture needs a new file in normlab/surgery/adapters/ (docs/surgery.md)"
    )


__all__ = [
    "ADAPTERS", "Adapter", "HFAdapter", "HFSpec", "Layout", "NormSite", "Port", "find_adapter",
    "get_adapter", "linears", "register_adapter", "supported",
]
