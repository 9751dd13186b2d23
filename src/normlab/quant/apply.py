"""Fake-quantize the Linears of any model for the length of a `with` block.

    with fake_quantized(model, QuantSpec(w_bits=4, a_bits=8)) as paths:
        logits = model(batch)                 # every selected Linear runs on Q(x) and Q(W)

Each selected layer (torch `nn.Linear`, HuggingFace's `Conv1D`, found by class name so that
`transformers` is never imported) computes y = Q_a(x) Q_w(W)ᵀ + b: its weight is replaced by
Q_w(W) (computed once, per output channel or per tensor) and a forward pre-hook quantizes its
input on every call. Biases stay in floating point. On exit the original `nn.Parameter` objects
are put back (a tied head stays tied: only the head's attribute was replaced), also when the
body raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch.nn.functional as F
from torch import Tensor, nn

from normlab.quant.fake import QuantSpec, fake_quant
from normlab.selection import Named, Where, find_modules


def is_linear(module: nn.Module) -> bool:
    """nn.Linear, or HuggingFace's Conv1D (GPT-2's (in, out) Linear)."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def output_axis(module: nn.Module) -> int:
    """The axis of the weight that indexes output channels: 0 for nn.Linear, 1 for Conv1D."""
    return 0 if isinstance(module, nn.Linear) else 1


def linear_forward(module: nn.Module, x: Tensor, weight: Tensor) -> Tensor:
    """The layer's map with `weight` in place of its own."""
    if isinstance(module, nn.Linear):
        return F.linear(x, weight, module.bias)
    out = x @ weight
    return out if module.bias is None else out + module.bias


def quantizable(model: nn.Module, where: Where = None) -> Named:
    """(path, layer) of the Linears of `model` that `where` selects (None: all of them).

    ValueError when none is selected, naming what exists.
    """
    layers = find_modules(model, lambda name, m: is_linear(m), root=True, nested=True)
    if where is None:
        return layers
    chosen = [(name, m) for name, m in find_modules(model, where, root=True, nested=True)
              if is_linear(m)]
    if not chosen:
        names = ", ".join(name for name, _ in layers[:12]) or "(none)"
        raise ValueError(f"where={where!r} selected no Linear; the Linears are: {names}"
                         + (" ..." if len(layers) > 12 else ""))
    return chosen


def quantized_weight(module: nn.Module, spec: QuantSpec) -> Tensor:
    """Q_w(W) of one layer (W itself when the spec leaves weights in floating point)."""
    weight = module.weight.detach()
    if spec.w_bits is None:
        return weight
    return fake_quant(weight, spec.w_bits, spec.w_granularity, axis=output_axis(module))


def quantized_input(x: Tensor, spec: QuantSpec) -> Tensor:
    """Q_a(x) of one activation (x itself when activations stay in floating point)."""
    if spec.a_bits is None:
        return x
    return fake_quant(x, spec.a_bits, spec.a_granularity, axis=-1)


@contextmanager
def fake_quantized(model: nn.Module, spec: QuantSpec, where: Where = None) -> Iterator[list[str]]:
    """Run `model` with its selected Linears fake-quantized; yields their paths."""
    if not isinstance(spec, QuantSpec):
        raise TypeError(f"spec must be a QuantSpec, got {type(spec).__name__}")
    layers = quantizable(model, where)
    saved: list[tuple[nn.Module, nn.Parameter]] = []
    handles = []

    def hook(module: nn.Module, args: tuple) -> tuple:
        return (quantized_input(args[0], spec), *args[1:])

    try:
        for _, module in layers:
            if spec.w_bits is not None:
                weight = quantized_weight(module, spec)
                saved.append((module, module._parameters.pop("weight")))
                module.weight = weight  # a plain tensor attribute while quantized
            if spec.a_bits is not None:
                handles.append(module.register_forward_pre_hook(hook))
        yield [name for name, _ in layers]
    finally:
        for handle in handles:
            handle.remove()
        for module, param in reversed(saved):
            del module.weight
            module.weight = param
