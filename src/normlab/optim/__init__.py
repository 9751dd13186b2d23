"""Optimizers for weights followed by a normalization (scale-invariant weights).

    optimizer = AdamP(model.parameters(), lr=1e-3, weight_decay=0.1)
    optimizer = SGDP(model.parameters(), lr=0.1, momentum=0.9)
"""

from normlab.optim.adamp import SGDP, AdamP, project_radial, scale_invariant_view

__all__ = ["SGDP", "AdamP", "project_radial", "scale_invariant_view"]
