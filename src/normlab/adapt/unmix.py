"""UnMix-TNS: test-time normalization statistics mixed from K components, for non-i.i.d.
(label-correlated) test streams.

    unmix = UnMixTNS(model)            # hooks on every BatchNorm / RepBN; model.eval()
    logits, _ = model(images)          # normalized with per-sample mixed statistics
    unmix.remove()

A batch sorted by label carries the statistics of a few classes only; normalizing it with its
own moments (Tent, test-time BN) then removes class information. UnMix-TNS keeps K statistics
components per layer, initialized around the source running statistics (μ_s, σ²_s):

    μ_k = μ_s + sqrt(0.5·K/(K − 1))·σ_s·ε_k,  ε_k ~ N(0, I),     σ²_k = 0.5·σ²_s
    (K = 1: μ_1 = μ_s)

and for each test sample b, with μ_b, σ²_b its instance moments over its tokens (biased):

    p_bk = softmax_k(cos(μ_b, μ_k) / τ)                                     τ = 0.07
    m_bk = (1 − p_bk)·μ_k + p_bk·μ_b,     v_bk = (1 − p_bk)·σ²_k + p_bk·σ²_b
    mean_b = avg_k m_bk,    var_b = avg_k v_bk + avg_k m_bk² − mean_b²   (law of total variance)
    y_b = (x_b − mean_b) / sqrt(var_b + eps)·γ + β       (RepBN: + α·x_b)

then, without gradients, μ_k += λ·avg_b p_bk(μ_b − μ_k) and σ²_k += λ·avg_b p_bk(σ²_b − σ²_k),
λ = 1 − (1 − momentum)^(B / B_max), momentum the layer's own (0.1), B_max = 64.

Paper: "Un-Mixing Test-Time Normalization Statistics: Combatting Label Temporal Correlation"
(Tomar, Vray, Frossard, Bozorgtabar, ICLR 2024); defaults from the official code
(devavratTomar/unmixtns: K = 16, B_max = 64, τ = 0.07). The official layer replaces
BatchNorm2d and reduces over (H, W); here the instance moments reduce over a sample's tokens
(every axis between the first and the channels), padding excluded.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normlab.adapt.statistics import batch_norm_layers
from normlab.norms.batch import BatchNorm, RepBN


class _Components:
    """The K (mean, variance) components of one layer and its mixed normalization."""

    def __init__(self, layer: BatchNorm, k: int, gen: torch.Generator) -> None:
        wide = torch.promote_types(layer.running_mean.dtype, torch.float32)
        mean, var = layer.running_mean.to(wide), layer.running_var.to(wide)
        noise = torch.randn((k, mean.numel()), generator=gen, dtype=wide).to(mean.device)
        spread = math.sqrt(0.5 * k / (k - 1)) if k > 1 else 0.0
        self.means = mean + spread * var.sqrt() * noise  # (K, C)
        self.vars = (0.5 * var).expand(k, -1).clone()  # (K, C)

    def __call__(self, layer: BatchNorm, x: Tensor, mask: Tensor | None, lam: float,
                 temperature: float) -> Tensor:
        if x.dim() < 3:
            raise ValueError(f"UnMixTNS: a sample needs tokens, input (B, ..., C); got shape "
                             f"{tuple(x.shape)}")
        wide = torch.promote_types(x.dtype, self.means.dtype)
        xf = x.to(wide).reshape(x.shape[0], -1, x.shape[-1])  # (B, T, C)
        w = torch.ones(xf.shape[:2], device=x.device, dtype=wide) if mask is None else \
            mask.reshape(x.shape[0], -1).to(wide)
        count = w.sum(1, keepdim=True).clamp_min(1.0)  # (B, 1)
        mu = (xf * w[..., None]).sum(1) / count  # (B, C)
        var = (((xf - mu[:, None]) ** 2) * w[..., None]).sum(1) / count
        p = torch.softmax(F.cosine_similarity(mu[:, None], self.means[None], dim=-1)
                          / temperature, dim=1)[..., None]  # (B, K, 1)
        m = (1 - p) * self.means + p * mu[:, None]  # (B, K, C)
        v = (1 - p) * self.vars + p * var[:, None]
        mean = m.mean(1)
        total = v.mean(1) + (m * m).mean(1) - mean * mean
        self.means += (lam * (p * (mu[:, None] - self.means)).mean(0)).to(self.means.dtype)
        self.vars += (lam * (p * (var[:, None] - self.vars)).mean(0)).to(self.vars.dtype)
        y = (xf - mean[:, None]) * torch.rsqrt(total[:, None] + layer.eps)
        if layer.weight is not None:
            y = y * layer.weight.to(wide)
        if layer.bias is not None:
            y = y + layer.bias.to(wide)
        if isinstance(layer, RepBN):
            y = y + layer.alpha.to(wide) * xf
        return y.reshape(x.shape).to(x.dtype)


class UnMixTNS:
    """Mixed-statistics normalization on every BatchNorm / RepBN of a model, by forward hooks
    (see the module docstring); `remove()` restores the plain layers.

    Args:
        model: put in eval mode; its layers keep their parameters and running statistics.
        components: K (16).
        batch_size_max: B_max in λ (64).
        temperature: τ of the component weights (0.07).
        seed: the draw of the component means.

    ValueError when the model has no BatchNorm/RepBN, or another batch-statistics norm.
    """

    def __init__(self, model: nn.Module, *, components: int = 16, batch_size_max: int = 64,
                 temperature: float = 0.07, seed: int = 0) -> None:
        if components < 1 or batch_size_max < 1 or not temperature > 0:
            raise ValueError("UnMixTNS: components and batch_size_max must be >= 1 and "
                             "temperature > 0")
        layers = batch_norm_layers(model)
        other = sorted({type(m).__name__ for _, m in layers if not isinstance(m, BatchNorm)})
        if not layers or other:
            raise ValueError(f"UnMixTNS: needs BatchNorm or RepBN layers and no other "
                             f"batch-statistics norm; {type(model).__name__} has "
                             f"{', '.join(other) if other else 'none'}")
        model.eval()
        gen = torch.Generator().manual_seed(seed)
        self.batch_size_max, self.temperature = batch_size_max, temperature
        self.components = {name: _Components(layer, components, gen) for name, layer in layers}
        self._handles = [layer.register_forward_hook(self._hook(name), with_kwargs=True)
                         for name, layer in layers]

    def _hook(self, name: str):
        def hook(layer: BatchNorm, args: tuple, kwargs: dict, output: Tensor) -> Tensor:
            x = args[0]
            mask = args[1] if len(args) > 1 else kwargs.get("mask")
            lam = 1 - (1 - layer.momentum) ** (x.shape[0] / self.batch_size_max)
            with torch.no_grad():
                return self.components[name](layer, x, mask, lam, self.temperature)
        return hook

    def remove(self) -> None:
        """Take the hooks off: the layers normalize with their running statistics again."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
