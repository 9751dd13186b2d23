"""The normalization zoo: every method behind one registry.

Importing this package registers every built-in norm; `list_norms()` names them.
"""

from normlab.norms import (  # noqa: F401  (imported to register the norms)
    batch,
    bcn,
    elementwise,
    group,
    identity,
    layer,
    online,
    powernorm,
    prepbn,
    rms,
    unified,
)
from normlab.norms.base import Norm, NormInfo
from normlab.norms.registry import get_norm_class, list_norms, make_norm, register_norm

__all__ = ["Norm", "NormInfo", "get_norm_class", "list_norms", "make_norm", "register_norm"]
