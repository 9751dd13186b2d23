"""normlab: a lab for normalization in Transformers.

    import normlab
    norm = normlab.make_norm("rmsnorm", 512)                 # the zoo: normlab.list_norms()
    block = normlab.make_block(512, 8, scheme="lns", norm="rmsnorm", layer_index=3, depth=12)
    model = normlab.GPT(normlab.GPTConfig(norm="dyt", placement="peri"))

Subpackages: `normlab.functional` (the pure maths), `normlab.norms` (the zoo),
`normlab.weights` (weight-side normalizations), `normlab.blocks` (placements), `normlab.models`
(GPT, Llama, ViT), `normlab.kernels` (fused ops), `normlab.surgery` (swap / convert / fold),
`normlab.diagnostics` (layer-by-layer metrics), `normlab.hf` (the round trip with
transformers), `normlab.bench` (training harness and reports).
"""

from normlab.blocks import (
    SCHEMES,
    Block,
    Placement,
    make_block,
    register_scheme,
    resolve_layout,
)
from normlab.models import GPT, GPTConfig, Llama, LlamaConfig, ViT, ViTConfig
from normlab.norms import Norm, NormInfo, get_norm_class, list_norms, make_norm, register_norm
from normlab.version import __version__

__all__ = [
    "GPT",
    "SCHEMES",
    "Block",
    "GPTConfig",
    "Llama",
    "LlamaConfig",
    "Norm",
    "NormInfo",
    "Placement",
    "ViT",
    "ViTConfig",
    "__version__",
    "get_norm_class",
    "list_norms",
    "make_block",
    "make_norm",
    "register_norm",
    "register_scheme",
    "resolve_layout",
]
