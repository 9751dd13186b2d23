"""Gated, grouped RMSNorm: the output norm of Mamba-2 and of Qwen3-Next's linear attention."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from normlab import functional as F
from normlab import kernels
from normlab.norms.base import Norm, NormInfo, affine_params
from normlab.norms.registry import register_norm


@register_norm("gatedrmsnorm")
class GatedRMSNorm(Norm):
    """RMSNorm over groups of channels, gated by silu of a second input z.

        norm_before_gate=False:  y = RMSNorm_g(x ⊙ silu(z)) ⊙ γ          (Mamba-2, the default)
        norm_before_gate=True:   y = RMSNorm_g(x) ⊙ γ ⊙ silu(z)          (Qwen3-Next)

    RMSNorm_g splits the D channels into D/group_size groups of `group_size` consecutive
    channels and divides each group by its own sqrt(mean(u²) + eps); γ spans all D channels.

    The gate is a keyword of the call, `norm(x, gate=z)` with z of x's shape: the norm keeps
    the zoo's `norm(x, mask=None)` contract, and `norm(x)` (no gate) is the grouped RMSNorm
    alone, as `RMSNormGated(x, z=None)` of the official code. Everything is computed in
    float32 for half inputs and cast once at the end (the official `upcast=True`).

    Args:
        dim: channels D.
        group_size: channels per RMS statistic; required, and must divide D. Mamba-2 uses
            d_ssm // ngroups, Qwen3-Next applies the norm per value head (group_size = D =
            head_v_dim). A checkpoint trained with groups is another function under one group:
            dropping the argument is the usual bug, so it has no default.
        norm_before_gate: the order, see above; False as Mamba-2.
        eps: 1e-5, the official module's default (Qwen3-Next uses 1e-6).
        affine: learn γ (ones). There is no bias (neither model has one).

    γ is a per-channel factor of the output in either order, so it folds into a reader
    (info.fold = "affine"); the statistics and the gate stay.

    Paper: "Transformers are SSMs: Generalized Models and Efficient Algorithms Through
    Structured State Space Duality" (Dao, Gu, ICML 2024); official code state-spaces/mamba
    (`RMSNormGated`, `rms_norm_ref`).
    """

    info = NormInfo(
        family="rms", stats="token", fold="affine",
        paper="Transformers are SSMs (Mamba-2) (Dao, Gu, ICML 2024)",
    )

    def __init__(
        self, dim: int, *, group_size: int, norm_before_gate: bool = False, eps: float = 1e-5,
        affine: bool = True, device=None, dtype=None,
    ) -> None:
        super().__init__(dim, eps=eps, affine=affine)
        self.group_size = F.check_group_size("gatedrmsnorm", dim, group_size)
        self.norm_before_gate = bool(norm_before_gate)
        affine_params(self, dim, bias=False, device=device, dtype=dtype)

    @classmethod
    def example_kwargs(cls, dim: int) -> dict[str, Any]:
        # two groups where D allows, else one
        return {"group_size": dim // 2 if dim % 2 == 0 and dim > 2 else dim}

    def forward(self, x: Tensor, mask: Tensor | None = None, *, gate: Tensor | None = None
                ) -> Tensor:
        """y for input x (..., D) and gate z (x's shape, or None for no gate)."""
        self._check_input(x, mask)
        if gate is not None:
            if not isinstance(gate, Tensor) or not gate.is_floating_point():
                got = gate.dtype if isinstance(gate, Tensor) else type(gate).__name__
                raise TypeError(f"GatedRMSNorm: gate must be a floating-point tensor, got {got}")
            if gate.shape != x.shape:
                raise ValueError(f"GatedRMSNorm: gate must have x's shape {tuple(x.shape)}, "
                                 f"got {tuple(gate.shape)}")
        return self._gated(x, gate)

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return self._gated(x, None)

    def _gated(self, x: Tensor, gate: Tensor | None) -> Tensor:
        return kernels.gated_rms_norm(
            x, gate, self.weight, self.group_size, self.eps,
            norm_before_gate=self.norm_before_gate,
        )

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, group_size={self.group_size}, "
                f"norm_before_gate={self.norm_before_gate}")
