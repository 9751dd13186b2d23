"""The normalization zoo: every method behind one registry.

Importing this package imports each of its modules, which registers every built-in norm (a new
file with a `@register_norm` class needs no import line here); `list_norms()` names them.
"""

from normlab.norms.base import Norm, NormInfo, Squash
from normlab.norms.registry import NORMS, get_norm_class, list_norms, make_norm, register_norm
from normlab.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = [
    "NORMS", "Norm", "NormInfo", "Squash", "get_norm_class", "list_norms", "make_norm",
    "register_norm",
]
