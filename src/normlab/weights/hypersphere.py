"""nGPT's weight normalization: matrices whose vectors along the embedding axis are unit-norm,
restored after every optimizer step."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from normlab.functional import compute_dtype


def unit_norm(x: Tensor, dim: int = -1) -> Tensor:
    """x / ‖x‖₂ along `dim`, computed in float32 for half-precision inputs and cast back.

    No eps, as nGPT's `justnorm`: a zero vector gives NaN rather than a silently wrong zero.
    """
    wide = x.to(compute_dtype(x.dtype))
    return (wide / torch.linalg.vector_norm(wide, dim=dim, keepdim=True)).to(x.dtype)


class UnitNormProjection:
    """Put every given matrix back on the unit hypersphere after each optimizer step.

        W ← W / ‖W‖₂ along `dim` (dim=1: each row; dim=0: each column)

    nGPT keeps each vector along the embedding axis at unit norm: rows of the token embedding,
    the LM head, W_q, W_k, W_v and the MLP's input matrices (dim=1), columns of the attention
    output and MLP output matrices (dim=0). The model normalizes once at init and the trainer
    calls `project()` after every step, the first included. It sits beside `NormProjection`
    (NaP), which restores each matrix's initial Frobenius norm instead.

        proj = UnitNormProjection(model.unit_norm_matrices())
        loss.backward(); optimizer.step(); proj.project()

    Paper: "nGPT: Normalized Transformer with Representation Learning on the Hypersphere"
    (Loshchilov, Hsieh, Sun, Ginsburg, ICLR 2025); NVIDIA/ngpt `normalize_matrices`.

    Args:
        matrices: name -> (2-D floating-point tensor, the axis whose vectors are normalized).
    """

    def __init__(self, matrices: Mapping[str, tuple[Tensor, int]]) -> None:
        if not matrices:
            raise ValueError("UnitNormProjection: no matrices given")
        self.matrices: dict[str, tuple[Tensor, int]] = {}
        for name, (weight, dim) in matrices.items():
            if not isinstance(weight, Tensor) or not weight.is_floating_point() \
                    or weight.dim() != 2:
                raise TypeError(f"UnitNormProjection: {name} must be a 2-D floating-point tensor")
            if dim not in (0, 1):
                raise ValueError(f"UnitNormProjection: {name}: dim must be 0 or 1, got {dim!r}")
            self.matrices[name] = (weight, dim)

    @torch.no_grad()
    def project(self) -> None:
        """Normalize every matrix in place along its axis."""
        for weight, dim in self.matrices.values():
            weight.copy_(unit_norm(weight.detach(), dim))

    def __repr__(self) -> str:
        return f"UnitNormProjection({len(self.matrices)} matrices)"
