"""The effective learning rate of each weight matrix: how fast a step turns it.

For a weight w followed by a normalization the function depends on w/‖w‖ only, its gradient is
orthogonal to w and scales as 1/‖w‖, so a step of learning rate η turns w by an angle of
about η·‖g₁‖/‖w‖², g₁ the gradient at unit norm: the effective learning rate of SGD is

    η_eff = η / ‖w‖²          (Adam, which divides out the gradient's scale: η / ‖w‖)

and it falls as ‖w‖ grows. AdamP/SGDP slow that growth; NaP (Normalize-and-Project) holds ‖w‖
at its initial value, so η_eff follows the schedule alone. "AdamP: Slowing Down the Slowdown
for Momentum Optimizers on Scale-invariant Weights" (Heo et al., ICLR 2021); "Normalization and
effective learning rates in reinforcement learning" (Lyle et al., NeurIPS 2024).

    weights = effective_learning_rates(model, lr)   # after the backward, before the step
    # [{"name": "blocks.0.attn.q_proj.weight", "norm": 4.1, "effective_lr": 1.8e-4,
    #   "scale_invariant": "channel" | "layer" | None}, ...]

`scale_invariant` is AdamP's per-step test on the current gradient (δ = 0.1): the view in
which the weight counts as scale-invariant, None when it does not (or has no gradient).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor
from torch.nn.utils import parametrize

from normlab.optim import scale_invariant_view


def _full(t: Tensor) -> Tensor:
    return t.full_tensor() if isinstance(t, DTensor) else t


def linear_weights(model: nn.Module) -> dict[str, Tensor]:
    """The 2-D stored weights of every nn.Linear without a parametrization, by parameter name;
    a tied weight once."""
    found: dict[str, Tensor] = {}
    seen: set[int] = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and not parametrize.is_parametrized(module, "weight"):
            weight = module.weight
            if weight.dim() == 2 and id(weight) not in seen:
                seen.add(id(weight))
                found[f"{name}.weight" if name else "weight"] = weight
    return found


@torch.no_grad()
def effective_learning_rates(model: nn.Module, lr: float, *, delta: float = 0.1,
                             ) -> list[dict[str, Any]]:
    """For each `linear_weights` matrix: its Frobenius norm, η/‖w‖² and AdamP's
    scale-invariance test on its current `.grad` (see the module docstring). Every rank must
    call it under FSDP (the shards are gathered)."""
    if not lr > 0:
        raise ValueError(f"effective_learning_rates: lr must be positive, got {lr}")
    out = []
    for name, weight in linear_weights(model).items():
        w = _full(weight.detach())
        norm = float(torch.linalg.vector_norm(w, dtype=torch.float64))
        view = None
        if weight.grad is not None:
            found = scale_invariant_view(w, _full(weight.grad), delta=delta)
            view = None if found is None else ("channel" if found else "layer")
        out.append({"name": name, "norm": norm,
                    "effective_lr": lr / norm**2 if norm > 0 else None,
                    "scale_invariant": view})
    return out
