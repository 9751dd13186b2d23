"""Apply PyTorch's own weight parametrizations (weight norm, spectral norm) to chosen layers.

These helpers only select modules and call `torch.nn.utils.parametrizations.weight_norm` /
`.spectral_norm` on each; the maths is PyTorch's.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrizations

from normlab.weights.select import LINEAR_AND_CONV, Predicate, select_modules


def apply_weight_norm(
    model: nn.Module,
    *,
    types: tuple[type[nn.Module], ...] = LINEAR_AND_CONV,
    predicate: Predicate | None = None,
    name: str = "weight",
    dim: int | None = 0,
) -> list[str]:
    """Weight normalization W = g · V / ||V|| on every selected module (Linear/Conv by default,
    filtered by `predicate(qualified_name, module)`), via
    `torch.nn.utils.parametrizations.weight_norm(module, name, dim)`.

    dim=0 keeps one g per output unit (the norm runs over the other axes); dim=None uses one g
    for the whole tensor. g starts at ||V||, so every layer computes what it did before.
    Returns the qualified names of the changed modules.

    Paper: "Weight Normalization: A Simple Reparameterization to Accelerate Training of Deep
    Neural Networks" (Salimans, Kingma, NeurIPS 2016).
    """
    chosen = select_modules(model, types, predicate, name=name, what="apply_weight_norm")
    for _, module in chosen:
        parametrizations.weight_norm(module, name=name, dim=dim)
    return [qualified for qualified, _ in chosen]


def apply_spectral_norm(
    model: nn.Module,
    *,
    types: tuple[type[nn.Module], ...] = LINEAR_AND_CONV,
    predicate: Predicate | None = None,
    name: str = "weight",
    n_power_iterations: int = 1,
    eps: float = 1e-12,
    dim: int | None = None,
) -> list[str]:
    """Spectral normalization W / σ(W) on every selected module (Linear/Conv by default, filtered
    by `predicate(qualified_name, module)`), via `torch.nn.utils.parametrizations.spectral_norm`.

    σ(W) is estimated by power iteration; PyTorch runs `n_power_iterations` steps per forward
    in training mode only, so σ is refined as the model trains and frozen in eval. Unlike weight
    norm this changes each layer's output at once (it divides W by σ). Returns the qualified
    names of the changed modules.

    Paper: "Spectral Normalization for Generative Adversarial Networks" (Miyato, Kataoka,
    Koyama, Yoshida, ICLR 2018).
    """
    chosen = select_modules(model, types, predicate, name=name, what="apply_spectral_norm")
    for _, module in chosen:
        parametrizations.spectral_norm(
            module, name=name, n_power_iterations=n_power_iterations, eps=eps, dim=dim
        )
    return [qualified for qualified, _ in chosen]
