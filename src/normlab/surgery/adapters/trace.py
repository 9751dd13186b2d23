"""Record one forward pass op by op: the data flow that `structure.py` reads an architecture from.

The probe forward runs under a `TorchFunctionMode` that records every torch call (function,
input tensors, output tensors, the module stack at the time), and under module hooks that
record what each module took and returned. A tensor is keyed by (id, version): an in-place op
makes a new key for the same object, and every recorded tensor is kept alive until the trace
is dropped, so no id is reused meanwhile. Calls that return no tensor (`size`, `dim`, `item`),
or only their own input unchanged, are not data flow and are not recorded.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

Key = tuple[int, int]  # (id(tensor), tensor._version)


def key(t: Tensor) -> Key:
    return id(t), t._version


def tensors(obj: Any) -> list[Tensor]:
    """Every tensor in a (nested) structure: tuples, lists, dicts, ModelOutputs."""
    if hasattr(obj, "to_tuple"):  # a transformers ModelOutput
        obj = obj.to_tuple()
    leaves, _ = tree_flatten(obj)
    return [x for x in leaves if isinstance(x, Tensor)]


@dataclass
class Op:
    """One recorded torch call."""

    name: str
    inputs: list[Key]
    shapes: list[tuple[int, ...]]  # of the inputs
    outputs: list[Key]
    out_shapes: list[tuple[int, ...]]
    stack: tuple[str, ...]  # module paths, outermost first
    scalars: list[float] = field(default_factory=list)  # numeric non-tensor arguments


@dataclass
class Call:
    """One call of a module: its main input (first tensor argument) and its first output."""

    path: str
    input: Key | None
    output: Key | None


class Trace(TorchFunctionMode):
    """`with Trace(model) as t: model(**inputs)`; then read `t.ops`, `t.calls`, `t.returned`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.ops: list[Op] = []
        self.calls: dict[str, list[Call]] = defaultdict(list)
        self.producer: dict[Key, int] = {}
        self.consumers: dict[Key, list[int]] = defaultdict(list)
        self.returned_by: dict[Key, list[str]] = defaultdict(list)
        self.values: dict[Key, Tensor] = {}
        self.params = {id(p): name for name, p in model.named_parameters(remove_duplicate=False)}
        self._stack: list[str] = []
        self._pending: list[tuple[str, Key | None]] = []
        self._hooks: list[Any] = []
        self._paused = False

    # ---- recording -------------------------------------------------------------------------
    def _remember(self, t: Tensor) -> Key:
        k = key(t)
        self.values[k] = t
        return k

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self._paused:
            return func(*args, **kwargs)
        flat_in, _ = tree_flatten((args, kwargs))
        ins = [x for x in flat_in if isinstance(x, Tensor)]
        in_keys = [self._remember(t) for t in ins]
        shapes = [tuple(t.shape) for t in ins]
        scalars = [float(x) for x in flat_in
                   if isinstance(x, int | float) and not isinstance(x, bool)]
        out = func(*args, **kwargs)
        # an op returning its own input unchanged (`.to` to the same dtype, dropout in eval)
        # is no data flow
        outs = [t for t in tensors(out) if key(t) not in in_keys]
        if outs:
            op = Op(getattr(func, "__name__", str(func)), in_keys, shapes,
                    [self._remember(t) for t in outs], [tuple(t.shape) for t in outs],
                    tuple(self._stack), scalars)
            index = len(self.ops)
            self.ops.append(op)
            for k in op.inputs:
                self.consumers[k].append(index)
            for k in op.outputs:
                self.producer[k] = index
        return out

    def _pre(self, path: str):
        def hook(module, args, kwargs):
            self._paused = True
            first = tensors((args, kwargs))
            self._pending.append((path, self._remember(first[0]) if first else None))
            self._stack.append(path)
            self._paused = False
        return hook

    def _post(self, path: str):
        def hook(module, args, kwargs, output):
            self._paused = True
            self._stack.pop()
            _, k_in = self._pending.pop()
            outs = tensors(output)
            k_out = self._remember(outs[0]) if outs else None
            self.calls[path].append(Call(path, k_in, k_out))
            if k_out is not None:
                self.returned_by[k_out].append(path)
            self._paused = False
        return hook

    def __enter__(self) -> Trace:
        for path, module in self.model.named_modules():
            if path:
                self._hooks.append(module.register_forward_pre_hook(self._pre(path),
                                                                    with_kwargs=True))
                self._hooks.append(module.register_forward_hook(self._post(path),
                                                                with_kwargs=True))
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        return super().__exit__(*exc)

    # ---- reading ---------------------------------------------------------------------------
    def producer_of(self, k: Key) -> Op | None:
        index = self.producer.get(k)
        return None if index is None else self.ops[index]

    def consumers_of(self, k: Key) -> Iterator[tuple[int, Op]]:
        for index in self.consumers.get(k, ()):
            yield index, self.ops[index]

    def param_name(self, k: Key) -> str | None:
        return self.params.get(k[0])


@torch.no_grad()
def record(model: nn.Module, inputs: dict[str, Any]) -> tuple[Trace, set[Key]]:
    """Run `model(**inputs)` in eval mode under a Trace; return it and the keys of the tensors
    the model returned. Training flags are restored afterwards."""
    flags = {name: m.training for name, m in model.named_modules()}
    model.eval()
    try:
        with Trace(model) as trace:
            out = model(**inputs)
        trace.returned = {key(t) for t in tensors(out)}
    finally:
        for name, m in model.named_modules():
            m.training = flags.get(name, m.training)
    return trace, trace.returned
