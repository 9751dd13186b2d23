"""One batch, any model: the calling convention every model-agnostic tool shares.

    call_model(model, batch)   # model(**batch) for a mapping, model(*batch) for a tuple or list,
                               # model(batch) for a tensor
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

Batch = Tensor | tuple | list | Mapping[str, Any]


def call_model(model: nn.Module, batch: Batch) -> Any:
    """`model`'s output on `batch`, spread as keywords, positional arguments or one input."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, tuple | list):
        return model(*batch)
    return model(batch)
