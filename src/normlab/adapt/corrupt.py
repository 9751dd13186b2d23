"""Seeded image corruptions made in code: the distribution shifts of the test-time benchmarks.

    shifted = corrupt(images, "blur", seed=0)          # images (B, C, H, W), float

Each corruption has one severity knob, in the units of the images (normlab's digits are
standardized: pixel standard deviation 1). The same (images, name, severity, seed) always
gives the same tensor; the random draws come from a `torch.Generator` seeded with `seed`.
Modelled on the ImageNet-C / CIFAR-10-C families ("Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations", Hendrycks & Dietterich, ICLR 2019), sized for 8×8 images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# name -> default severity
CORRUPTIONS: dict[str, float] = {
    "gaussian_noise": 0.8,  # σ of the added N(0, σ²) noise
    "blur": 0.8,            # σ in pixels of the Gaussian kernel (3×3 on 8×8 images)
    "contrast": 0.3,        # c in x ← m + c·(x − m), m each image's mean
    "rotation": 30.0,       # θ: each image turned by an angle drawn from U(−θ, θ) degrees
}


def _gaussian_noise(x: Tensor, sigma: float, gen: torch.Generator) -> Tensor:
    return x + sigma * torch.randn(x.shape, generator=gen, dtype=x.dtype)


def _blur(x: Tensor, sigma: float, gen: torch.Generator) -> Tensor:
    radius = max(1, math.ceil(2 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    kernel = (k[:, None] * k[None, :]).expand(x.shape[1], 1, -1, -1)  # (C, 1, k, k)
    padded = F.pad(x, (radius,) * 4, mode="replicate")
    return F.conv2d(padded, kernel, groups=x.shape[1])


def _contrast(x: Tensor, c: float, gen: torch.Generator) -> Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return mean + c * (x - mean)


def _rotation(x: Tensor, degrees: float, gen: torch.Generator) -> Tensor:
    angle = (torch.rand(x.shape[0], generator=gen, dtype=x.dtype) * 2 - 1) * math.radians(degrees)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


_FUNCTIONS = {"gaussian_noise": _gaussian_noise, "blur": _blur, "contrast": _contrast,
              "rotation": _rotation}


def corrupt(images: Tensor, name: str, severity: float | None = None, *, seed: int = 0) -> Tensor:
    """`images` (B, C, H, W) under the corruption `name` (see `CORRUPTIONS` for the severity
    each takes and its default); a new tensor, deterministic per seed."""
    if name not in _FUNCTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise TypeError("corrupt: images must be a float tensor of shape (B, C, H, W)")
    severity = CORRUPTIONS[name] if severity is None else float(severity)
    if not severity > 0:
        raise ValueError(f"corrupt: severity must be positive, got {severity}")
    gen = torch.Generator().manual_seed(seed)
    return _FUNCTIONS[name](images.detach().cpu(), severity, gen).to(images.device)
