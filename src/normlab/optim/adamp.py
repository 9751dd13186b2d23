"""AdamP and SGDP: Adam / SGD whose update loses its radial part on scale-invariant weights.

A weight w followed by a normalization (a Linear before a LayerNorm or BatchNorm) computes the
same function at every scale c·w, so its gradient is orthogonal to w and a plain step only
grows ‖w‖; with momentum the radial part of the update grows ‖w‖ fast, which shrinks the
effective step size (lr/‖w‖² for SGD, lr/‖w‖ for Adam) early in training. AdamP and SGDP
detect such weights at each step and remove the radial part of the update:

    for a weight of rank >= 2, try the views (a) one row per output channel, p.view(C_out, -1),
    then (b) the whole tensor as one row; for the first view where
        max_rows |cos(g_row, w_row)| < δ / sqrt(n)        (n = row length, g the raw gradient)
    the weight counts as scale-invariant:
        u ← u − ŵ·⟨ŵ, u⟩ per row,   ŵ = w_row / (‖w_row‖ + eps)       (u: Adam's or SGD's update)
        and its decoupled weight decay is multiplied by `wd_ratio`.
    Vectors and scalars (biases, norm gains) are never projected.

Decoupled weight decay: AdamP w ← w·(1 − lr·wd·r); SGDP w ← w·(1 − lr·wd·r / (1 − momentum)),
with r = wd_ratio on projected weights and 1 elsewhere. Then AdamP w ← w − lr/(1 − β₁ᵗ)·u with
u = m/(sqrt(v/(1 − β₂ᵗ)) + eps) (Nesterov: (β₁m + (1 − β₁)g)/(...)), SGDP w ← w − lr·u with u
the momentum buffer (Nesterov: g + μ·buf).

Paper: "AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights"
(Heo, Chun, Oh, Han, Yun, Kim, Uh, Ha, ICLR 2021). Defaults and the order of the views follow
the official code (clovaai/AdamP): δ = 0.1, wd_ratio = 0.1, eps = 1e-8.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

Params = Iterable[Tensor] | Iterable[dict]


def _rows(t: Tensor, channel: bool) -> Tensor:
    return t.reshape(t.shape[0], -1) if channel else t.reshape(1, -1)


@torch.no_grad()
def scale_invariant_view(weight: Tensor, grad: Tensor, *, delta: float = 0.1,
                         eps: float = 1e-8) -> bool | None:
    """AdamP's test: True when the channel view (one row per output channel) passes, False
    when only the whole-tensor view does, None when neither does (not scale-invariant).

    A view passes when max over its rows of |cos(g_row, w_row)| < δ / sqrt(row length)."""
    wide = torch.promote_types(weight.dtype, torch.float32)
    w, g = weight.to(wide), grad.to(wide)
    for channel in (True, False):
        w_rows, g_rows = _rows(w, channel), _rows(g, channel)
        cos = torch.nn.functional.cosine_similarity(g_rows, w_rows, dim=1, eps=eps).abs()
        if cos.max() < delta / math.sqrt(w_rows.shape[1]):
            return channel
    return None


@torch.no_grad()
def project_radial(weight: Tensor, grad: Tensor, update: Tensor, *, delta: float,
                   eps: float) -> Tensor | None:
    """`update` with its radial part removed, row by row in the view `scale_invariant_view`
    chose, or None when `weight` is not detected as scale-invariant. Statistics in fp32+."""
    channel = scale_invariant_view(weight, grad, delta=delta, eps=eps)
    if channel is None:
        return None
    wide = torch.promote_types(weight.dtype, torch.float32)
    w_rows, u_rows = _rows(weight.to(wide), channel), _rows(update.to(wide), channel)
    unit = w_rows / (w_rows.norm(dim=1, keepdim=True) + eps)
    u_rows = u_rows - unit * (unit * u_rows).sum(dim=1, keepdim=True)
    return u_rows.reshape(update.shape).to(update.dtype)


def _check(lr: float, eps: float, delta: float, wd_ratio: float, weight_decay: float) -> None:
    for name, value in (("lr", lr), ("eps", eps), ("delta", delta)):
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if not 0.0 <= wd_ratio <= 1.0:
        raise ValueError(f"wd_ratio must be in [0, 1], got {wd_ratio}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")


class AdamP(torch.optim.Optimizer):
    """Adam with decoupled weight decay and the radial projection on scale-invariant weights.

    With no weight detected as scale-invariant it is AdamW (torch's, eps outside the square
    root, bias-corrected). See the module docstring for the update and the paper.
    """

    def __init__(self, params: Params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, delta: float = 0.1,
                 wd_ratio: float = 0.1, nesterov: bool = False) -> None:
        _check(lr, eps, delta, wd_ratio, weight_decay)
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      delta=delta, wd_ratio=wd_ratio, nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = float(state["step"])
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**t)).add_(group["eps"])
                if group["nesterov"]:
                    update = (beta1 * exp_avg + (1 - beta1) * grad) / denom
                else:
                    update = exp_avg / denom
                ratio = 1.0
                if p.dim() > 1:
                    projected = project_radial(p, grad, update, delta=group["delta"],
                                               eps=group["eps"])
                    if projected is not None:
                        update, ratio = projected, group["wd_ratio"]
                if group["weight_decay"] > 0:
                    p.mul_(1 - group["lr"] * group["weight_decay"] * ratio)
                p.add_(update, alpha=-group["lr"] / (1 - beta1**t))
        return loss


class SGDP(torch.optim.Optimizer):
    """SGD (momentum, Nesterov) with decoupled weight decay and the radial projection on
    scale-invariant weights. See the module docstring for the update and the paper."""

    def __init__(self, params: Params, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, eps: float = 1e-8,
                 delta: float = 0.1, wd_ratio: float = 0.1) -> None:
        _check(lr, eps, delta, wd_ratio, weight_decay)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, eps=eps,
                                      delta=delta, wd_ratio=wd_ratio))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            momentum = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(momentum).add_(grad, alpha=1 - group["dampening"])
                update = grad + momentum * buf if group["nesterov"] else buf.clone()
                ratio = 1.0
                if p.dim() > 1:
                    projected = project_radial(p, grad, update, delta=group["delta"],
                                               eps=group["eps"])
                    if projected is not None:
                        update, ratio = projected, group["wd_ratio"]
                if group["weight_decay"] > 0:
                    p.mul_(1 - group["lr"] * group["weight_decay"] * ratio / (1 - momentum))
                p.add_(update, alpha=-group["lr"])
        return loss
