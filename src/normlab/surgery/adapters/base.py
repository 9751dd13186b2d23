"""What an adapter states about a model: where its norms sit, who reads them, who writes the stream.

Surgery never guesses an architecture from its module names. An adapter, one file per
architecture, claims the models it knows (`Adapter.claims`) and returns a `Layout`: every norm
site with the Linear(s) that read its output, every module or parameter that writes the
residual stream, the weights that are tied, and whether the model is a Pre-LN model that the
exact Pre-RMSNorm conversion applies to (and if not, why). `register_adapter` adds one to
`ADAPTERS`, which `find_adapter` searches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from normlab.registry import Registry

# How a port's weight is laid out; "in"/"out" are the features the norm/stream side touches.
#   linear:    nn.Linear, weight (out, in), y = x Wᵀ + b
#   conv1d:    GPT-2's Conv1D, weight (in, out), y = x W + b
#   embedding: nn.Embedding, weight (rows, D): every row is written to the stream
#   conv2d:    nn.Conv2d patch embedding, weight (D, C, kh, kw), bias (D,)
#   parameter: an nn.Parameter added to the stream, shape (..., D) (cls token, position table)
PortKind = Literal["linear", "conv1d", "embedding", "conv2d", "parameter"]

# Where a norm sits:
#   pre:   reads the residual stream; its output goes only to `readers` (Pre-LN block input)
#   final: the last norm; its output goes to `readers` (a head) or, with no readers, is the
#          model output itself
#   inner: reads something other than the stream (patches, an MLP hidden layer); its output
#          goes only to `readers`: it folds, but the Pre-RMSNorm conversion does not apply
#   post:  its output *is* the residual stream (Post-LN) or reaches a non-Linear consumer:
#          nothing folds and the Pre-RMSNorm conversion does not apply
#   start: its output is the first term of the residual stream and it reads only embeddings
#          (BLOOM's word_embeddings_layernorm): nothing folds into a Linear; the conversion
#          keeps its statistics and recentres its output with a D×D map
Role = Literal["pre", "final", "inner", "post", "start"]


@dataclass(frozen=True)
class Port:
    """A module (or, for kind "parameter", a parameter) at `path` with its weight layout."""

    path: str
    kind: PortKind


@dataclass(frozen=True)
class NormSite:
    """One norm module and every Linear that reads its output (all of them: a fold needs all)."""

    path: str
    role: Role
    readers: tuple[Port, ...] = ()
    input_scale: float = 1.0  # the readers see input_scale × the norm output (LNS's 1/√ℓ)
    why: str = ""  # for role "post": what consumes the output


@dataclass(frozen=True)
class Layout:
    """The facts of one model instance that surgery needs.

    Attributes:
        arch: a label for messages, e.g. "gpt2 (GPT2LMHeadModel)".
        norms: every norm site, in model order.
        writers: every module/parameter whose output is added to the residual stream.
        ties: (head weight, embedding weight) parameter paths that share one tensor now.
        convert_refusal: None when the exact Pre-LN → Pre-RMSNorm conversion applies; otherwise
            the reason it does not (Post-LN, already RMSNorm, an unsupported block, ...).
    """

    arch: str
    norms: tuple[NormSite, ...]
    writers: tuple[Port, ...] = ()
    ties: tuple[tuple[str, str], ...] = ()
    convert_refusal: str | None = None


class Adapter:
    """Base class of the per-architecture adapters; `name` is its key in `ADAPTERS`."""

    name: str

    def label(self) -> str:
        """The architecture, for the list of supported ones."""
        raise NotImplementedError

    def claims(self, model: nn.Module) -> bool:
        """Whether this adapter describes `model` (the architectures of two adapters never
        overlap)."""
        raise NotImplementedError

    def layout(self, model: nn.Module, inputs: Any = None) -> Layout:
        """The layout of `model`; `inputs` are the caller's probe inputs, for adapters that
        read the structure from a forward pass (None: their own)."""
        raise NotImplementedError

    def probe_inputs(self, model: nn.Module, generator: torch.Generator) -> dict[str, Any]:
        """A small random input batch (keyword arguments of `model.forward`)."""
        raise NotImplementedError

    def output(self, model: nn.Module, inputs: Any) -> Tensor:
        """The tensor the equivalence is measured on (logits, else the last hidden state)."""
        raise NotImplementedError

    def untie(self, model: nn.Module) -> None:
        """Record in the model's own config that the head is no longer tied (HF models)."""


def linears(*paths: str) -> tuple[Port, ...]:
    """`Port(path, "linear")` for each path."""
    return tuple(Port(path, "linear") for path in paths)


def tie(model: nn.Module, head: str | None, embedding: str) -> tuple[tuple[str, str], ...]:
    """`Layout.ties` for a head module path and an embedding module path: the pair of weight
    paths when the head shares the embedding's tensor now, else ()."""
    if head is None:
        return ()
    shared = model.get_submodule(head).weight is model.get_submodule(embedding).weight
    return ((f"{head}.weight", f"{embedding}.weight"),) if shared else ()


ADAPTERS: Registry[Adapter] = Registry("surgery adapter")


def register_adapter(adapter: Adapter) -> Adapter:
    """Add `adapter` to `ADAPTERS` under `adapter.name` and return it."""
    ADAPTERS.add(adapter.name, adapter)
    return adapter
