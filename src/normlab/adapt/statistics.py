"""Which layers normalize with batch statistics, and AdaBN: their statistics re-estimated on
the target data.

    adabn(model, target_images)          # every BatchNorm's running moments := the target's

AdaBN ("Revisiting Batch Normalization For Practical Domain Adaptation", Li, Wang, Shi, Liu,
Hou, 2016, arXiv 1603.04779) replaces the source-domain running statistics of each BatchNorm by
the target domain's, with no gradient step. Here the target moments are exact, not an EMA:
one pass over the target batches with every batch-statistics norm normalizing by its batch's
own moments (as in training, the rest of the model in eval mode), accumulating per channel,
over every real token, Σx and Σx² in fp64; then running_mean = mean and running_var = the
unbiased variance n/(n − 1)·σ², the convention of the running variance in torch's BatchNorm.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from normlab.norms import Norm
from normlab.norms.batch import BatchNorm
from normlab.norms.bcn import BatchChannelNorm
from normlab.selection import Named, is_norm

Forward = Callable[[nn.Module, Tensor], Tensor]
# norms whose running statistics are the per-channel mean and variance of their input
MOMENT_NORMS: tuple[type[nn.Module], ...] = (BatchNorm, BatchChannelNorm, _BatchNorm)


def logits_of(model: nn.Module, inputs: Tensor) -> Tensor:
    """The logits of normlab's models, which return (logits, loss), or of any model that
    returns a tensor."""
    out = model(inputs)
    return out[0] if isinstance(out, tuple) else out


def uses_batch_statistics(module: nn.Module) -> bool:
    """A normlab norm with `info.stats == "batch"` or one of torch's BatchNorm layers."""
    return (isinstance(module, Norm) and module.info.stats == "batch") or \
        isinstance(module, _BatchNorm)


def batch_norm_layers(model: nn.Module) -> Named:
    """The batch-statistics norms of `model` that hold no other norm (PRepBN's inner RepBN,
    not PRepBN), as (dotted path, module)."""
    return [(name, m) for name, m in model.named_modules() if uses_batch_statistics(m)
            and not any(is_norm(inner) for inner in list(m.modules())[1:])]


def moment_layers(model: nn.Module, what: str) -> Named:
    """`batch_norm_layers` when all of them keep mean/variance running statistics
    (`MOMENT_NORMS`); ValueError naming the problem otherwise."""
    layers = batch_norm_layers(model)
    if not layers:
        raise ValueError(f"{what}: {type(model).__name__} has no batch-statistics norm "
                         "(batchnorm, repbn, prepbn, bcn or torch BatchNorm)")
    other = sorted({type(m).__name__ for _, m in layers if not isinstance(m, MOMENT_NORMS)})
    if other:
        raise ValueError(f"{what}: {', '.join(other)} keeps other running statistics than a "
                         "per-channel mean and variance; supported: BatchNorm, RepBN, PRepBN, "
                         "BCN and torch's BatchNorm")
    return layers


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """The model in eval mode except its batch-statistics norms, which normalize with each
    batch's moments (train mode); the previous modes are restored on exit."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    for _, layer in batch_norm_layers(model):
        layer.train()
    try:
        yield
    finally:
        for module, mode in modes.items():
            module.training = mode


def channel_rows(module: nn.Module, x: Tensor, mask: Tensor | None) -> Tensor:
    """The input of a norm as rows (N, C) of real tokens: normlab norms take (..., C) and a
    mask over the leading axes; torch's BatchNorm takes (N, C, *)."""
    if isinstance(module, _BatchNorm):
        return x.movedim(1, -1).reshape(-1, x.shape[1])
    rows = x.reshape(-1, x.shape[-1])
    return rows if mask is None else rows[mask.reshape(-1).to(torch.bool)]


def _input(args: tuple, kwargs: dict) -> tuple[Tensor, Tensor | None]:
    return args[0], args[1] if len(args) > 1 else kwargs.get("mask")


@torch.no_grad()
def adabn(model: nn.Module, batches: Iterable[Tensor], *, forward: Forward = logits_of,
          ) -> dict[str, int]:
    """Set the running mean and variance of every batch-statistics norm to the moments of its
    input over `batches` (the target data); returns {layer: tokens counted}.

    `forward(model, inputs)` runs one batch (default: `model(inputs)`). ValueError when the
    model has no such norm, or one whose statistics are not a mean and a variance
    (`moment_layers`), or when `batches` is empty.
    """
    layers = moment_layers(model, "adabn")
    sums: dict[nn.Module, list] = {m: [0, 0.0, 0.0] for _, m in layers}

    def accumulate(module: nn.Module, args: tuple, kwargs: dict) -> None:
        rows = channel_rows(module, *_input(args, kwargs)).double()
        entry = sums[module]
        entry[0] += rows.shape[0]
        entry[1] = entry[1] + rows.sum(0)
        entry[2] = entry[2] + (rows * rows).sum(0)

    handles = [m.register_forward_pre_hook(accumulate, with_kwargs=True) for _, m in layers]
    try:
        with batch_statistics(model):
            for inputs in batches:
                forward(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    counts = {}
    for name, module in layers:
        n, s1, s2 = sums[module]
        if n < 2:
            raise ValueError(f"adabn: {name or '<root>'} saw {n} tokens; pass target batches")
        mean = s1 / n
        var = (s2 - n * mean * mean).clamp_min(0.0) / (n - 1)
        module.running_mean.copy_(mean.to(module.running_mean.dtype))
        module.running_var.copy_(var.to(module.running_var.dtype))
        counts[name] = n
    return counts
