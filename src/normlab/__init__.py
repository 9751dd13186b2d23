"""normlab: a lab for normalization in Transformers.

    import normlab
    norm = normlab.make_norm("rmsnorm", 512)
    normlab.list_norms()
"""

from normlab.norms import Norm, NormInfo, get_norm_class, list_norms, make_norm, register_norm

__version__ = "0.1.0"

__all__ = [
    "Norm",
    "NormInfo",
    "__version__",
    "get_norm_class",
    "list_norms",
    "make_norm",
    "register_norm",
]
