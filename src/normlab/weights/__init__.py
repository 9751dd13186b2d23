"""Weight-side normalizations: they reparametrize or project weights instead of activations.

    weight_standardize(model)             # Weight Standardization on every Linear/Conv
    fix_norm(model.tok_emb)               # FixNorm: unit-norm embedding rows
    nap = NormProjection.from_model(model); ...; optimizer.step(); nap.project()
    apply_weight_norm(model), apply_spectral_norm(model)    # PyTorch's own parametrizations
    proj = UnitNormProjection(ngpt.unit_norm_matrices()); ...; proj.project()   # nGPT
"""

from normlab.weights.fixnorm import UnitRows, fix_norm
from normlab.weights.hypersphere import UnitNormProjection, unit_norm
from normlab.weights.nap import NormProjection, weight_matrices
from normlab.weights.parametrize import apply_spectral_norm, apply_weight_norm
from normlab.weights.select import LINEAR_AND_CONV, select_modules
from normlab.weights.standardize import WeightStandardization, weight_standardize

__all__ = [
    "LINEAR_AND_CONV",
    "NormProjection",
    "UnitNormProjection",
    "UnitRows",
    "WeightStandardization",
    "apply_spectral_norm",
    "apply_weight_norm",
    "fix_norm",
    "select_modules",
    "unit_norm",
    "weight_matrices",
    "weight_standardize",
]
