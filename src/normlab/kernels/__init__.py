"""Fast normalization kernels behind one dispatch point per op.

    from normlab import kernels
    y = kernels.rms_norm(x, weight)                       # backend "auto"
    y, h = kernels.add_rms_norm(x, residual, weight)      # h = x + residual
    y = kernels.rms_norm(x, w, zero_centered=True)        # Gemma: x / rms(x) · (1 + w)
    y = kernels.derf(x, alpha, shift, weight, bias)       # weight · erf(alpha·x + shift) + bias
    y = kernels.gated_rms_norm(x, z, weight, group_size)  # RMSNorm per group of x ⊙ silu(z)
    with kernels.use_backend("reference"):
        ...

Backends: "torch" (fused ATen ops with hand-derived backwards, any device, no compile step),
"cpp" (fused C++ CPU kernels compiled when normlab is installed, see `normlab.kernels.cpu`),
"triton" (CUDA), both as custom ops that torch.compile can trace, "reference"
(`normlab.functional` under autograd) and "auto". Importing this package never imports
Triton. Measurements and the command that made them: docs/kernels.md.
"""

from normlab.kernels.backend import BACKENDS, ENV_VAR, Backend, use_backend
from normlab.kernels.dispatch import (
    add_layer_norm,
    add_rms_norm,
    derf,
    dyt,
    gated_rms_norm,
    layer_norm,
    rms_norm,
)

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "Backend",
    "add_layer_norm",
    "add_rms_norm",
    "derf",
    "dyt",
    "gated_rms_norm",
    "layer_norm",
    "rms_norm",
    "use_backend",
]
