"""The pure maths of the normalizations under the zoo's name: `normlab.functional` re-exported.

The functions live in `normlab.functional`, below the kernels and the norms alike, so that the
kernels are checked against them without importing the zoo; this name stays for the code and
users who know them as `normlab.norms.functional`.
"""

from normlab.functional import (
    affine_of_moments,
    apply_affine,
    check_group_size,
    compute_dtype,
    crms_norm,
    derf,
    dyt,
    gated_rms_norm,
    group_moments,
    group_norm,
    largest_divisor_at_most,
    layer_norm,
    masked_mean_square,
    masked_moments,
    real_tokens,
    resolve_groups,
    rms_norm,
    scale_norm,
    seed_norm,
    upcast,
    zero_centered_gain,
)

__all__ = [
    "affine_of_moments",
    "apply_affine",
    "check_group_size",
    "compute_dtype",
    "crms_norm",
    "derf",
    "dyt",
    "gated_rms_norm",
    "group_moments",
    "group_norm",
    "largest_divisor_at_most",
    "layer_norm",
    "masked_mean_square",
    "masked_moments",
    "real_tokens",
    "resolve_groups",
    "rms_norm",
    "scale_norm",
    "seed_norm",
    "upcast",
    "zero_centered_gain",
]
