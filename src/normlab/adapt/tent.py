"""Tent: test-time adaptation of the norms' affine parameters by entropy minimization.

    tent = Tent(model)                 # freezes all but the norms' γ, β; Adam(lr=1e-3)
    for images in stream:
        logits = tent(images)          # predictions of this batch, then one update

For each test batch, online (no reset between batches):
    ŷ = softmax(f(x)),   H = mean over the batch of −Σ_c ŷ_c log ŷ_c,   θ ← Adam step on ∇_θ H
where θ are the parameters of the normalization layers only and the predictions returned are
those of the same forward pass, before its update. Batch-statistics norms normalize with the
test batch's own moments (train mode; the rest of the model is in eval mode, so dropout is off);
token-wise norms (LayerNorm, RMSNorm, ...) keep their per-token statistics and only their affine
parameters adapt.

Paper: "Tent: Fully Test-Time Adaptation by Entropy Minimization" (Wang, Shelhamer, Liu,
Olshausen, Darrell, ICLR 2021). Defaults follow the official CIFAR configuration
(DequanWang/tent: Adam, lr 1e-3, β (0.9, 0.999), no weight decay, one step per batch).
Deviation: the official code drops BatchNorm's running statistics; here they keep being
updated by the test batches (an EMA), which Tent's own predictions never read. `reset()`
restores the model and the optimizer as they were when the Tent object was made.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from normlab.adapt.statistics import Forward, batch_norm_layers, logits_of
from normlab.adapt.tune import Trainable, norm_only


def entropy(logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean Shannon entropy (nats) of softmax(logits) over the last axis, averaged over the
    leading positions where `mask` is True (all when None); computed in fp32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    per = -(logp.exp() * logp).sum(-1)
    if mask is None:
        return per.mean()
    mask = mask.to(torch.bool)
    if mask.shape != per.shape or not mask.any():
        raise ValueError(f"entropy: mask must have shape {tuple(per.shape)} and select at least "
                         "one position")
    return per[mask].mean()


class Tent:
    """Online entropy minimization of the norms' parameters (see the module docstring).

    Args:
        model: adapted in place: every parameter but the norms' is frozen, the model is put in
            eval mode and its batch-statistics norms in train mode.
        lr, betas: Adam's (1e-3, (0.9, 0.999)).
        steps: optimizer steps per batch (1).
        forward: `forward(model, inputs) -> logits` (default: `model(inputs)`, first output).

    ValueError when the model has no norm, or none with parameters (`norm_only`).
    """

    def __init__(self, model: nn.Module, *, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), steps: int = 1,
                 forward: Forward = logits_of) -> None:
        if steps < 1:
            raise ValueError(f"Tent: steps must be >= 1, got {steps}")
        self.model, self.steps, self.forward = model, steps, forward
        self.trainable: Trainable = norm_only(model, ("norms",))
        model.eval()
        for _, layer in batch_norm_layers(model):
            layer.train()
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=0.0)
        self._saved = (copy.deepcopy(model.state_dict()),
                       copy.deepcopy(self.optimizer.state_dict()))

    @torch.enable_grad()
    def __call__(self, inputs: Tensor, mask: Tensor | None = None) -> Tensor:
        """The logits of `inputs` (detached) from the forward pass that also takes the step;
        `mask` (the logits' leading shape) leaves padded or ignored positions out of the loss."""
        for step in range(self.steps):
            logits = self.forward(self.model, inputs)
            if step == 0:
                predictions = logits.detach()
            entropy(logits, mask).backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return predictions

    def reset(self) -> None:
        """The model's parameters and buffers and the optimizer state as at creation."""
        model_state, optim_state = self._saved
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(optim_state)
