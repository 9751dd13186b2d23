"""Builders and data shared by the norm tests; the formulas they check stay in each test file."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor

from normlab import get_norm_class, make_norm
from normlab.norms.base import Norm

F64 = torch.float64


Spec = str | functools.partial


def norm_class(spec: Spec) -> type[Norm]:
    """The class a registry name or a partial of a norm class builds."""
    return spec.func if isinstance(spec, functools.partial) else get_norm_class(spec)


def make(spec: Spec, dim: int, **kw) -> Norm:
    """`make_norm(spec, dim, **kw)` with the class's example values for the arguments it
    requires (`Norm.example_kwargs`: gatedrmsnorm's group_size), unless `kw` gives them."""
    return make_norm(spec, dim, **{**norm_class(spec).example_kwargs(dim), **kw})


def perturbed(
    name: Spec, dim: int, *, scale: float = 0.3, dtype: torch.dtype = F64, seed: int = 0, **kw
) -> Norm:
    """`make(name, dim, dtype=dtype, **kw)` with every parameter moved off its init by
    `scale`·N(0, 1), so a parameter the forward ignores changes nothing and shows."""
    torch.manual_seed(seed)
    norm = make(name, dim, dtype=dtype, **kw)
    with torch.no_grad():
        for p in norm.parameters():
            p.add_(scale * torch.randn_like(p))
    return norm


def affine_norm(name: str, dim: int, *, w_scale: float = 0.5, **kw) -> Norm:
    """A float64 norm with γ = 1 + w_scale·N(0, 1) and β = 0.3·N(0, 1) (seeded)."""
    torch.manual_seed(0)
    norm = make_norm(name, dim, dtype=F64, **kw)
    with torch.no_grad():
        norm.weight.copy_(1 + w_scale * torch.randn(dim, dtype=F64))
        norm.bias.copy_(0.3 * torch.randn(dim, dtype=F64))
    return norm


def random_mask(shape: tuple[int, ...], *, seed: int = 3, pad: float = 0.4) -> Tensor:
    """A bool mask (True = real token) padding about a fraction `pad` of the positions at random;
    the first token of every sequence stays real."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=gen) > pad
    mask[..., 0] = True
    return mask


def edge_mask(shape: tuple[int, int]) -> Tensor:
    """(B, T) padding at both ends: the last two tokens of the first sequence, the first token
    of the last one."""
    mask = torch.ones(shape, dtype=torch.bool)
    mask[0, -2:] = False
    mask[-1, 0] = False
    return mask


def batches(
    scales: Iterable[float], shape: tuple[int, ...], *, seed: int = 1, shift: float = 0.1
) -> Iterator[tuple[Tensor, Tensor]]:
    """One float64 (x, dy) pair per scale s: x = s·(N(0, 1) + shift), dy = N(0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    for scale in scales:
        yield (scale * (torch.randn(shape, generator=gen, dtype=F64) + shift),
               torch.randn(shape, generator=gen, dtype=F64))


def train_step(
    norm: Norm, x: Tensor, mask: Tensor | None, dy: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One forward and backward of `norm`: (y, dL/dx, dL/dγ, dL/dβ) for the upstream grad dy."""
    norm.zero_grad()
    x = x.clone().requires_grad_(True)
    y = norm(x, mask)
    y.backward(dy)
    return y.detach(), x.grad, norm.weight.grad, norm.bias.grad


def assert_padding_excluded(
    make: Callable[[], Norm], data: Iterable[tuple[Tensor, Tensor]], mask: Tensor,
    garbage: float,
) -> list[tuple[Tensor, Tensor, tuple, tuple]]:
    """Train three fresh norms from `make` on `data`: masked, masked with `garbage`-sized noise
    at the padded positions, and on the real tokens alone without a mask. The real outputs, the
    input gradients and every buffer must agree after each step.

    Returns (x, dy, masked step, real-only step) per step, for checks of parameter gradients.
    """
    masked, noisy, real_only = make(), make(), make()
    steps = []
    for x, dy in data:
        garbled = torch.where(mask.unsqueeze(-1), x, garbage * torch.randn_like(x))
        got = train_step(masked, x, mask, dy)
        with_garbage = train_step(noisy, garbled, mask, dy)
        alone = train_step(real_only, x[mask].unsqueeze(0), None, dy[mask].unsqueeze(0))
        for i in (0, 1):  # y and dx at the real positions
            torch.testing.assert_close(got[i][mask], with_garbage[i][mask])
            torch.testing.assert_close(got[i][mask], alone[i][0])
        for name, buffer in masked.named_buffers():
            torch.testing.assert_close(buffer, noisy.get_buffer(name), msg=name)
            torch.testing.assert_close(buffer, real_only.get_buffer(name), msg=name)
        steps.append((x, dy, got, alone))
    return steps


def assert_same_continuation(
    a: Norm, b: Norm, data: Iterable[tuple[Tensor, Tensor]], mask: Tensor | None
) -> None:
    """`b`, loaded from `a`'s state_dict, trains on `data` exactly as `a` does: outputs,
    gradients and final state equal to the bit."""
    for x, dy in data:
        for got, want in zip(train_step(b, x, mask, dy), train_step(a, x, mask, dy), strict=True):
            assert torch.equal(got, want)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
