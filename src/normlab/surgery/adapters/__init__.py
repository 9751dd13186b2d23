"""Adapters: what surgery knows of an architecture.

    get_adapter(model)   # a registered adapter, else the traced one, else ValueError

Every HuggingFace model is read from its own data flow by `TRACED` (`traced.py`,
`structure.py`): no file per architecture. A hand-written adapter is kept only where the
structure cannot be inferred: normlab's own models (`normlab_models.py`: placements whose
gates and per-layer scales the trace would only see as opaque ops), and any architecture
registered with `register_adapter` (an `HFAdapter(HFSpec(...))` of module names, `hf.py`);
importing this package imports every file in it, so a new file needs no other edit. Nothing
here imports `transformers`, so `normlab.surgery` imports without it.
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
from normlab.surgery.adapters.traced import TRACED

import_submodules(__name__, __path__)


def supported() -> list[str]:
    """The architectures an adapter exists for."""
    return [adapter.label() for adapter in ADAPTERS.values()]


def find_adapter(model: nn.Module) -> Adapter | None:
    """The registered (hand-written) adapter that claims `model`, or None."""
    return next((a for a in ADAPTERS.values() if a.claims(model)), None)


def adapter_for(model: nn.Module) -> Adapter | None:
    """The registered adapter that claims `model`, else `TRACED` for a HuggingFace model (one
    with a `config.model_type`), else None."""
    adapter = find_adapter(model)
    return adapter if adapter is not None or not TRACED.claims(model) else TRACED


def get_adapter(model: nn.Module) -> Adapter:
    """As `adapter_for`, but a model without one is a ValueError naming what is supported."""
    adapter = adapter_for(model)
    if adapter is not None:
        return adapter
    raise ValueError(
        f"no surgery adapter for class {type(model).__name__}: surgery reads HuggingFace models "
        f"(with a config.model_type) and {', '.join(supported())}; register an adapter for "
        f"anything else (docs/surgery.md)"
    )


__all__ = [
    "ADAPTERS", "TRACED", "Adapter", "HFAdapter", "HFSpec", "Layout", "NormSite", "Port",
    "adapter_for", "find_adapter", "get_adapter", "linears", "register_adapter", "supported",
]
