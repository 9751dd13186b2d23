"""PRepBN: progressive re-parameterized BatchNorm, a token norm handing over to RepBN."""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor

from normlab import functional as F
from normlab.norms.base import Norm
from normlab.norms.batch import RepBN
from normlab.norms.registry import make_norm, register_norm


@register_norm("prepbn")
class PRepBN(Norm):
    """Progressive re-parameterized BatchNorm: a token norm handing over to RepBN in training.

        warm phase (first `warm` ticks):  y = norm1(x)
        then, at tick k = 0, 1, …:        λ = r0 · max(step − k, 0) / step
                                          y = λ·norm1(x) + (1 − λ)·RepBN(x)
        eval:                             y = RepBN(x)     (a per-channel affine map; folds)

    λ starts at r0 and decays linearly to 0 over `step` ticks; from then on training is RepBN
    alone and matches eval. During the warm phase RepBN is not called, so its running
    statistics start moving only when the decay starts.

    Counting unit: a tick is `calls_per_tick` **training forward calls** of this module (eval
    calls do not count). Gradient accumulation, activation checkpointing (which re-runs
    forward) and a module called twice per step all advance the schedule faster than the
    optimizer; set `calls_per_tick` to the forward calls per optimizer step (the official
    LLaMA-350M setup advances once every 16 calls). The counter is the buffer `calls`, saved in
    the state_dict, so a resumed run continues the schedule where it stopped.

    If training stops while λ > 0, eval (RepBN alone) no longer matches training; switching such
    a module to eval warns. Give the running statistics enough steps after λ reaches 0.

    Args:
        dim: channels C.
        eps, momentum, alpha_init, bn_weight_init: RepBN's (1e-5, 0.1, 1.0, 1.0 = vision init;
            the LLM init is alpha_init=0, bn_weight_init=0 with eps = the RMSNorm eps).
        affine: learnable affines of both norms.
        warm: ticks of pure norm1 before the decay; 0 (vision), 10000 (official LLaMA-350M).
        step: ticks for λ to go from r0 to 0; 300000 by default (60000 for SLAB's DeiT/Swin).
        r0: initial λ, 1.0 in every official setting.
        norm1: the token norm handed over from, a registry name or class ("layernorm" or
            "rmsnorm"), built with `make_norm(norm1, dim, eps=norm1_eps, affine=affine)`.
        norm1_eps: 1e-6 (SLAB's vision LayerNorm; its Swin variants use 1e-5).
        calls_per_tick: training forward calls per schedule tick, 1 as the vision code.

    Padding never enters RepBN's statistics (a deliberate difference from the official LLaMA
    code, which masks only the final norm).

    Paper: "SLAB: Efficient Transformers with Simplified Linear Attention and Progressive
    Re-parameterized Batch Normalization" (Guo, Chen, Tang, Wang, ICML 2024).
    """

    info = RepBN.info

    def __init__(
        self, dim: int, *, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
        alpha_init: float = 1.0, bn_weight_init: float = 1.0, warm: int = 0,
        step: int = 300000, r0: float = 1.0,
        norm1: str | type[Norm] | functools.partial = "layernorm", norm1_eps: float = 1e-6,
        calls_per_tick: int = 1, device=None, dtype=None,
    ) -> None:
        super().__init__(dim, eps=eps, affine=affine)
        for label, value, least in (("warm", warm, 0), ("step", step, 1),
                                    ("calls_per_tick", calls_per_tick, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"prepbn: {label} must be an int >= {least}, got {value!r}")
        if not r0 >= 0:
            raise ValueError(f"prepbn: r0 (the initial λ) must be >= 0, got {r0!r}")
        self.warm, self.step, self.r0, self.calls_per_tick = warm, step, float(r0), calls_per_tick
        self.norm1 = make_norm(norm1, dim, eps=norm1_eps, affine=affine, device=device, dtype=dtype)
        self.norm2 = RepBN(
            dim, eps=eps, momentum=momentum, affine=affine, alpha_init=alpha_init,
            bn_weight_init=bn_weight_init, device=device, dtype=dtype,
        )
        self.register_buffer("calls", torch.zeros((), dtype=torch.long, device=device))

    @property
    def lam(self) -> float:
        """The λ the next training call uses; 1.0 during the warm phase (norm1 alone)."""
        tick = int(self.calls) // self.calls_per_tick
        if tick < self.warm:
            return 1.0
        return self.r0 * max(self.step - (tick - self.warm), 0) / self.step

    @property
    def in_warmup(self) -> bool:
        """True while the next training call is in the pure-norm1 warm phase."""
        return int(self.calls) // self.calls_per_tick < self.warm

    def _normalize(self, x: Tensor, mask: Tensor | None) -> Tensor:
        if not self.training:
            return self.norm2(x, mask)
        warming, lam = self.in_warmup, self.lam
        self.calls += 1
        if warming:
            return self.norm1(x, mask)
        xf = F.upcast(x)
        y = lam * self.norm1(xf, mask) + (1.0 - lam) * self.norm2(xf, mask)
        return y.to(x.dtype)

    def train(self, mode: bool = True) -> PRepBN:
        if not mode and self.training and int(self.calls) > 0 and self.lam > 0:
            warnings.warn(
                f"prepbn: switching to eval at λ={self.lam:.4g} (after {int(self.calls)} training "
                f"calls); eval uses RepBN alone, so it does not match training until λ reaches 0 "
                f"(warm={self.warm}, step={self.step} ticks of {self.calls_per_tick} call(s))",
                stacklevel=2,
            )
        return super().train(mode)

    def _eval_affine(self) -> tuple[Tensor, Tensor]:
        return self.norm2._eval_affine()

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, warm={self.warm}, step={self.step}, r0={self.r0:g}, "
            f"calls_per_tick={self.calls_per_tick}"
        )
