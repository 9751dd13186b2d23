"""Layer effectiveness by ablation: the loss change when one block is replaced by the identity.

    base, deltas = skip_block_losses(model, lambda m: loss_fn(m, batch))
    # deltas[i] = loss(model with block i skipped) - base

A block that can be skipped at almost no cost adds little to the network ("The Unreasonable
Ineffectiveness of the Deeper Layers", Gromov et al., 2024; "The Curse of Depth in Large
Language Models", Sun et al., NeurIPS 2025, where the deep blocks of Pre-LN models are the
skippable ones).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from normlab.diagnostics.recorder import main_input, main_output
from normlab.diagnostics.select import Selector, select_blocks


def _identity_output(x: Tensor, output: Any) -> Any:
    """`output` with its hidden-state tensor replaced by the block input `x`."""
    if isinstance(output, Tensor):
        return x
    if isinstance(output, list):
        return [x, *output[1:]]
    if isinstance(output, tuple):
        return (x, *output[1:])
    key = next(iter(output))
    return type(output)(**{**output, key: x})  # dict or a HuggingFace ModelOutput


class _SkipHook:
    """Pre-hook keeps the block input; forward hook returns it in place of the output."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.input: Tensor | None = None

    def before(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = main_input(args, kwargs)
        # a copy: the block could update its input in place
        self.input = None if x is None else x.clone()

    def after(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        y = main_output(output)
        if self.input is None or y is None or y.shape != self.input.shape:
            raise ValueError(
                f"cannot skip block {self.name!r}: its input and output are not one hidden-state "
                "tensor of the same shape (identity would change the shape)"
            )
        return _identity_output(self.input, output)


def skip_block_losses(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], Tensor],
    *,
    blocks: Selector = None,
) -> tuple[float, list[float]]:
    """The loss of `model`, and for each block the loss change when that block is skipped.

    Args:
        model: any module whose blocks map a hidden state to one of the same shape.
        loss_fn: runs `model` on a fixed batch and returns a scalar loss (called 1 + L times
            under `torch.no_grad()`; it must be deterministic, e.g. no dropout).
        blocks: block selector (see `select.py`); None auto-detects.

    Returns:
        (base_loss, [loss_without_block_i - base_loss for each block i]).
    """
    chosen = select_blocks(model, blocks)
    with torch.no_grad():
        base = float(loss_fn(model))
        deltas = []
        for name, block in chosen:
            skip = _SkipHook(name)
            handles = [block.register_forward_pre_hook(skip.before, with_kwargs=True),
                       block.register_forward_hook(skip.after, with_kwargs=True)]
            try:
                deltas.append(float(loss_fn(model)) - base)
            finally:
                for handle in handles:
                    handle.remove()
    return base, deltas
