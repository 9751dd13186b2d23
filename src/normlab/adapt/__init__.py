"""Normalization as the knob for adaptation: norm-only tuning and test-time statistics.

    share = norm_only(model)                 # only the norms' parameters train
    adabn(model, target_batches)             # BatchNorm statistics := the target's moments
    tent = Tent(model); logits = tent(x)     # entropy minimization of the norms' γ, β, online
    unmix = UnMixTNS(model)                  # mixed statistics for label-correlated streams
    shifted = corrupt(images, "blur", seed=0)

Optimizers for scale-invariant weights (AdamP, SGDP) are in `normlab.optim`.
"""

from normlab.adapt.corrupt import CORRUPTIONS, corrupt
from normlab.adapt.statistics import adabn, batch_norm_layers, logits_of
from normlab.adapt.tent import Tent, entropy
from normlab.adapt.tune import PARTS, Trainable, norm_only, norm_parameters, parse_include
from normlab.adapt.unmix import UnMixTNS

__all__ = [
    "CORRUPTIONS", "PARTS", "Tent", "Trainable", "UnMixTNS", "adabn", "batch_norm_layers",
    "corrupt", "entropy", "logits_of", "norm_only", "norm_parameters", "parse_include",
]
