"""Normalize-and-Project (NaP): hold each weight matrix at its initial Frobenius norm."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from normlab.functional import compute_dtype
from normlab.weights.select import Predicate, select_modules


def weight_matrices(
    model: nn.Module,
    *,
    types: tuple[type[nn.Module], ...] = (nn.Linear,),
    predicate: Predicate | None = None,
) -> dict[str, nn.Parameter]:
    """The 2-D `weight` Parameters of the selected modules (Linear by default), by qualified
    parameter name ("blocks.0.fc1.weight"). A Parameter shared by several modules appears once.

    Raises ValueError when a selected weight has a parametrization: its stored tensor is not the
    matrix the layer uses, so projecting it would not hold that matrix's norm.
    """
    chosen = select_modules(model, types, predicate, what="weight_matrices")
    found: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for name, module in chosen:
        if parametrize.is_parametrized(module, "weight"):
            raise ValueError(
                f"weight_matrices: {name or '<root>'}.weight has a parametrization; NaP projects "
                f"stored weights, so remove the parametrization or leave this module out"
            )
        weight = module.weight
        if weight.dim() == 2 and id(weight) not in seen:
            seen.add(id(weight))
            found[f"{name}.weight" if name else "weight"] = weight
    return found


class NormProjection:
    """The projection half of Normalize-and-Project.

    At creation it records each tensor's Frobenius norm ρ = ||W||_F; `project()`, called after
    every optimizer step, rescales W ← W · ρ / ||W||_F. With a normalization layer before each
    nonlinearity the network is invariant to these scales, so the projection changes nothing
    the model computes and keeps the effective learning rate constant (it would otherwise decay
    as ||W|| grows). The norm layers' own scale/offset are not projected here.

        nap = NormProjection.from_model(model)      # 2-D weights of every nn.Linear
        loss.backward(); optimizer.step(); nap.project()

    The targets are the norms at creation. After a checkpoint is restored a new object can be
    built from the model: projected weights already have their targets as norms.

    Paper: "Normalization and effective learning rates in reinforcement learning" (Lyle, Zheng,
    Khetarpal, Martens, van Hasselt, Pascanu, Dabney, NeurIPS 2024). No official code was read;
    this follows the paper's description of per-matrix projection to the initial norm.
    """

    def __init__(self, params: Mapping[str, Tensor] | Iterable[Tensor]) -> None:
        named = dict(params) if isinstance(params, Mapping) else {
            str(i): p for i, p in enumerate(params)
        }
        if not named:
            raise ValueError("NormProjection: no parameters given")
        self.params: dict[str, Tensor] = {}
        self.targets: dict[str, Tensor] = {}
        for name, p in named.items():
            if not isinstance(p, Tensor) or not p.is_floating_point():
                raise TypeError(f"NormProjection: {name} must be a floating-point tensor")
            target = self._norm(p)
            if not target > 0:
                raise ValueError(
                    f"NormProjection: {name} has Frobenius norm {target.item():g}; a projection "
                    f"needs a positive initial norm (initialise the weight first)"
                )
            self.params[name] = p
            self.targets[name] = target

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        *,
        types: tuple[type[nn.Module], ...] = (nn.Linear,),
        predicate: Predicate | None = None,
    ) -> NormProjection:
        """Project the 2-D weights chosen by `weight_matrices(model, types=, predicate=)`."""
        return cls(weight_matrices(model, types=types, predicate=predicate))

    @staticmethod
    def _norm(p: Tensor) -> Tensor:
        return torch.linalg.vector_norm(p.detach(), dtype=compute_dtype(p.dtype))

    @torch.no_grad()
    def project(self) -> None:
        """Rescale every tensor in place back to its recorded norm (an all-zero one stays 0)."""
        for name, p in self.params.items():
            norm = self._norm(p)
            scale = torch.where(norm > 0, self.targets[name] / norm, torch.ones_like(norm))
            p.mul_(scale.to(p.dtype))

    def __repr__(self) -> str:
        return f"NormProjection({len(self.params)} tensors)"
