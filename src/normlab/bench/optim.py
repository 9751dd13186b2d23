"""Optimizer pieces of the bench: the optimizer (`optim.name`), the learning-rate schedule and
the clipping.

Clipping order in one step: AGC (per unit), then the global norm clip, then the GPAS gate clip.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

from normlab.bench.config import OptimConfig, ScheduleConfig
from normlab.blocks import Block
from normlab.optim import SGDP, AdamP
from normlab.weights import NormProjection


def _groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """The trainable parameters in two groups: weight decay on tensors of rank >= 2 only
    (matrices, embeddings). Gains, biases and scalar gates (norm weights, ReZero alphas, ...)
    are not decayed: decay would pull a gain towards 0 rather than towards its identity 1."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    if not decay and not no_decay:
        raise ValueError(f"{type(model).__name__} has no trainable parameter to optimize")
    return [{"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_adamw(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on tensors of rank >= 2 only (`_groups`)."""
    return torch.optim.AdamW(_groups(model, cfg), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             eps=cfg.eps)


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer `cfg.name` over the model's trainable parameters (groups as `_groups`).

    adamw:     torch's AdamW (β₁, β₂, eps from the config).
    adamp:     `normlab.optim.AdamP`, the same Adam with the radial part of the update removed
               on weights it detects as scale-invariant (δ = 0.1, wd_ratio = 0.1).
    sgdp:      `normlab.optim.SGDP`, momentum β₁ (0.9 by default), no Nesterov.
    adamw_nap: AdamW, then after every step each nn.Linear weight matrix is projected back to
               its Frobenius norm at creation (`normlab.weights.NormProjection`, NaP), so that
               its effective learning rate lr/‖W‖² follows the schedule alone.
    """
    groups = _groups(model, cfg)
    if cfg.name == "adamp":
        return AdamP(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    if cfg.name == "sgdp":
        return SGDP(groups, lr=cfg.lr, momentum=cfg.beta1, eps=cfg.eps)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    if cfg.name == "adamw_nap":
        projection = NormProjection.from_model(model)
        optimizer.register_step_post_hook(lambda *_: projection.project())
    return optimizer


def learning_rate(step: int, total_steps: int, lr: float, cfg: ScheduleConfig) -> float:
    """The learning rate for 0-based `step`.

    lr * (step + 1) / warmup during warmup, then a cosine from lr down to min_lr_ratio * lr at
    the last step. It depends on the step only, so a resumed run needs no scheduler state.
    """
    if step < cfg.warmup_steps:
        return lr * (step + 1) / cfg.warmup_steps
    decay_steps = max(1, total_steps - 1 - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    floor = cfg.min_lr_ratio * lr
    return floor + 0.5 * (lr - floor) * (1.0 + math.cos(math.pi * progress))


def _unitwise_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm per output unit: over dims 1.. for (out, in, ...) weights; whole tensor if <= 1-D."""
    if t.dim() <= 1:
        return t.norm()
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


@torch.no_grad()
def adaptive_clip_(params: Iterable[nn.Parameter], clip: float, eps: float = 1e-3) -> None:
    """NFNet adaptive gradient clipping (AGC), in place.

    For each unit i (row of a torch (out, in) weight; the whole tensor for vectors/scalars):
        max_i = clip * max(||W_i||, eps)
        G_i  <-  G_i * max_i / max(||G_i||, 1e-6)   if ||G_i|| > max_i
    "High-Performance Large-Scale Image Recognition Without Normalization", Brock, De, Smith,
    Simonyan, ICML 2021. The paper's defaults are clip 0.01 and eps 1e-3; the caller leaves out
    the final classifier, as the paper does.
    """
    for param in params:
        if param.grad is None:
            continue
        grad = param.grad
        wide = torch.promote_types(param.dtype, torch.float32)  # norms of bf16/fp16 in fp32
        max_norm = _unitwise_norm(param.to(wide)).clamp_min(eps) * clip
        grad_norm = _unitwise_norm(grad.to(wide))
        scale = torch.where(grad_norm > max_norm, max_norm / grad_norm.clamp_min(1e-6), 1.0)
        grad.mul_(scale.to(grad.dtype))


def classifier_parameters(model: nn.Module) -> set[int]:
    """ids of the final classifier's parameters: the `lm_head` (GPT) or `head` (ViT) module.

    With tied embeddings the LM head's weight is the token embedding; it is the classifier, so
    AGC leaves it out too.
    """
    for name in ("lm_head", "head"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            return {id(p) for p in head.parameters()}
    raise ValueError(f"optim.agc needs the final classifier to leave it unclipped, but "
                     f"{type(model).__name__} has no `lm_head` or `head` module; "
                     "set optim.agc=null")


def gpas_gate_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of every GPAS gate (`Gate.fn == "gpas"`) of the model's blocks.

    Read from each `Block`'s placement, so the selection follows the declared structure rather
    than parameter names; a gate shared by both sublayers is listed once. Call it on the module
    that holds the parameters the optimizer steps (after FSDP's `fully_shard`, which replaces
    them).
    """
    gates: dict[int, nn.Parameter] = {}
    for block in model.modules():
        if isinstance(block, Block):
            for gate in block.placement.gates:
                if gate.fn == "gpas":
                    for sublayer in gate.sublayers:
                        param = block.gates[gate.key(sublayer)]
                        gates.setdefault(id(param), param)
    if not gates:
        raise ValueError(f"optim.gate_clip clips the gradients of GPAS gates, but "
                         f"{type(model).__name__} has none; use placement.name=gpas or set "
                         "optim.gate_clip=0")
    return list(gates.values())


def clip_gradients_(cfg: OptimConfig, params: Sequence[nn.Parameter], *,
                    agc_params: Sequence[nn.Parameter] = (),
                    gate_params: Sequence[nn.Parameter] = ()) -> Tensor:
    """Clip the gradients of `params` in place as `cfg` says; returns the pre-clip global norm.

    1. AGC on `agc_params` when `cfg.agc` is set (the caller leaves out the classifier).
    2. The global L2 norm over `params` clipped to `cfg.grad_clip` (0 = measured only).
    3. One joint L2 norm over the GPAS gates' gradients, `gate_params`, clipped to
       `cfg.gate_clip` when it is set and > 0. "GPAS: Accelerating Convergence of LLM
       Pretraining via Gradient-Preserving Activation Scaling" (Chen et al., NeurIPS 2025); the
       official code's `--clip_gate_grad` (off by default, 0.01 at 7B) runs after the global
       clip over all parameters, gates included, as here.
    """
    if cfg.agc is not None:
        adaptive_clip_(agc_params, cfg.agc, cfg.agc_eps)
    grad_norm = nn.utils.clip_grad_norm_(params, cfg.grad_clip or math.inf)
    if cfg.gate_clip:
        nn.utils.clip_grad_norm_(gate_params, cfg.gate_clip)
    return grad_norm.full_tensor() if isinstance(grad_norm, DTensor) else grad_norm
