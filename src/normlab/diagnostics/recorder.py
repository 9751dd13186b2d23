"""`Recorder`: hooks that collect what normalization does inside any `nn.Module`.

    with Recorder(model) as rec:            # blocks and norms auto-detected (see select.py)
        loss = loss_fn(model(batch))
        loss.backward()
    report = summarize(rec.recording)       # the diagnostics JSON dict (summarize.py)

The hooks only collect. They copy activations (a bounded number of token rows, float32, on
the CPU) and, where keeping the tensor would cost too much memory, one reduction from
`metrics.py` or `norms.functional` (the squared norm of a parameter gradient, the batch moments
of a batch-statistics norm's input). They never return a value, so the model computes exactly
what it computes without them. Every hook, module and tensor alike, is removed on exit, also
when the body raises.

Steps: each call of the root module's forward starts a new step; a backward pass is filed under
the step whose outputs it differentiates (activation gradients) or under the current step
(parameter gradients).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from normlab.blocks.block import Attention
from normlab.diagnostics import metrics
from normlab.diagnostics.attention import layer_max_logit
from normlab.diagnostics.select import (
    Selector,
    block_of,
    norm_kind,
    select_blocks,
    select_norms,
)
from normlab.norms.base import Norm, Squash
from normlab.norms.functional import masked_moments

# Running buffers of batch-statistics norms and the batch statistic each one estimates.
RUNNING_BUFFERS = {"running_mean": "mean", "running_var": "var", "running_phi": "mean_square"}


@dataclass
class Capture:
    """Token rows of one activation at one step.

    values: (N, C) float32 copy of the kept rows; rows: (N,) their indices in the flattened
    leading axes of the original tensor, whose leading shape is `lead` (e.g. (B, T)).
    """

    step: int
    values: Tensor
    rows: Tensor
    lead: tuple[int, ...]


@dataclass
class BatchMoments:
    """The batch moments of a batch-statistics norm's input at one step (real tokens only) and
    its running buffers just before that step's update."""

    step: int
    mean: Tensor
    var: Tensor
    running: dict[str, Tensor]


@dataclass
class NormEntry:
    """What a norm declares about itself (normlab norms; None for others) and where it sits."""

    name: str
    cls: str
    kind: str
    stats: str | None
    block: int | None
    eps: float | None
    squash: Squash | None = None


@dataclass
class Recording:
    """Everything the hooks collected, keyed by qualified module name."""

    model_class: str
    parameters: int
    blocks: list[tuple[str, str]]
    norms: list[NormEntry]
    steps: int = 0
    block_in: dict[str, list[Capture]] = field(default_factory=lambda: defaultdict(list))
    block_out: dict[str, list[Capture]] = field(default_factory=lambda: defaultdict(list))
    block_out_grad: dict[str, list[Capture]] = field(default_factory=lambda: defaultdict(list))
    # block name -> step -> Σ ‖∂L/∂θ‖² over the block's parameters
    param_grad_sq: dict[str, dict[int, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    norm_in: dict[str, list[Capture]] = field(default_factory=lambda: defaultdict(list))
    norm_out: dict[str, list[Capture]] = field(default_factory=lambda: defaultdict(list))
    # norm name -> the scalars it declares (`NormInfo.scalars`), one dict per call
    scalars: dict[str, list[dict[str, float]]] = field(default_factory=lambda: defaultdict(list))
    batch_moments: dict[str, list[BatchMoments]] = field(
        default_factory=lambda: defaultdict(list))
    # block name -> the largest attention logit of its normlab attention layer, one per call
    attention_logit: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


def _eps(module: nn.Module) -> float | None:
    eps = getattr(module, "eps", getattr(module, "variance_epsilon", None))
    return float(eps) if isinstance(eps, int | float) else None


def _norm_entry(name: str, module: nn.Module, blocks: list[tuple[str, nn.Module]]) -> NormEntry:
    info = module.info if isinstance(module, Norm) else None
    return NormEntry(name, type(module).__name__, norm_kind(module),
                     info.stats if info else None, block_of(name, blocks), _eps(module),
                     info.squash if info else None)


def main_input(args: tuple, kwargs: dict[str, Any]) -> Tensor | None:
    """The hidden-state input of a block or norm call: the first positional tensor, else
    `hidden_states=` or `x=`, else the first floating-point tensor among the keywords."""
    if args and isinstance(args[0], Tensor):
        return args[0]
    for key in ("hidden_states", "x"):
        if isinstance(kwargs.get(key), Tensor):
            return kwargs[key]
    return next((v for v in kwargs.values() if isinstance(v, Tensor) and v.is_floating_point()),
                None)


def main_output(output: Any) -> Tensor | None:
    """The hidden-state output: the tensor itself, or the first entry of a tuple/dict output."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], Tensor):
        return output[0]
    if isinstance(output, dict) and output:
        first = next(iter(output.values()))
        return first if isinstance(first, Tensor) else None
    return None


class Recorder:
    """Context manager that records block, norm and gradient activity of `model`, and the
    largest attention logit of each block's normlab attention layer (`attention.py`).

    Args:
        model: any `nn.Module` (normlab's, HuggingFace's, your own).
        blocks: selector of the residual blocks (see `select.py`); None auto-detects.
        norms: selector of the norms; None auto-detects.
        max_tokens: rows kept per activation per step (the first ones in (batch, token) order,
            i.e. whole sequences first); None keeps all. Memory per step is about
            (2·blocks + 2·norms + blocks) · max_tokens · C floats.
        grads: also record gradients (block outputs and block parameters) when backward runs.
        token_mask: optional bool (B, T) tensor, True on real tokens, applied to every
            activation whose leading shape is (B, T); set `recorder.token_mask` again before a
            forward whose batch has another shape or padding.

    After exit, `recording` holds the collected data; `summarize(recorder.recording)` turns it
    into the diagnostics JSON dict.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        blocks: Selector = None,
        norms: Selector = None,
        max_tokens: int | None = 2048,
        grads: bool = True,
        token_mask: Tensor | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Recorder expects an nn.Module, got {type(model).__name__}")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive int or None, got {max_tokens!r}")
        self.model = model
        self.blocks = select_blocks(model, blocks)
        self.norms = select_norms(model, norms)
        self.max_tokens = max_tokens
        self.grads = grads
        self.token_mask = token_mask
        self.recording = Recording(
            model_class=type(model).__name__,
            parameters=sum(p.numel() for p in model.parameters()),
            blocks=[(name, type(m).__name__) for name, m in self.blocks],
            norms=[_norm_entry(name, m, self.blocks) for name, m in self.norms],
        )
        self._handles: list[RemovableHandle] = []
        self._calls = 0

    @property
    def token_mask(self) -> Tensor | None:
        return self._token_mask

    @token_mask.setter
    def token_mask(self, mask: Tensor | None) -> None:
        if mask is not None and (not isinstance(mask, Tensor) or mask.dtype != torch.bool):
            got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise TypeError(f"token_mask must be a bool tensor (True = real token), got {got}; "
                            "convert an attention mask with .bool()")
        self._token_mask = mask

    @property
    def step(self) -> int:
        return max(self._calls - 1, 0)

    def __enter__(self) -> Recorder:
        if self._handles:
            raise RuntimeError("this Recorder is already attached; use a new one per `with`")
        try:
            self._attach()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this recorder added (idempotent)."""
        while self._handles:
            self._handles.pop().remove()

    def _attach(self) -> None:
        self._handles.append(self.model.register_forward_pre_hook(self._on_root_call))
        for name, block in self.blocks:
            self._handles.append(block.register_forward_pre_hook(
                self._store_input(self.recording.block_in, name), with_kwargs=True))
            self._handles.append(block.register_forward_hook(self._on_block_output(name)))
            if self.grads:
                for param in block.parameters():
                    if param.requires_grad:
                        self._handles.append(param.register_hook(self._on_param_grad(name)))
        for name, module in self.model.named_modules():
            block = block_of(name, self.blocks)
            if isinstance(module, Attention) and block is not None:
                self._handles.append(module.register_forward_hook(
                    self._on_attention(self.blocks[block][0]), with_kwargs=True))
        for name, norm in self.norms:
            self._handles.append(norm.register_forward_pre_hook(
                self._store_input(self.recording.norm_in, name), with_kwargs=True))
            self._handles.append(norm.register_forward_hook(self._on_norm_output(name, norm)))
            if isinstance(norm, Norm) and norm.info.stats == "batch":
                self._handles.append(norm.register_forward_pre_hook(
                    self._on_batch_norm_input(name, norm), with_kwargs=True))

    def _capture(self, x: Tensor | None) -> Capture | None:
        if x is None or not x.is_floating_point() or x.dim() < 2:
            return None
        lead = tuple(x.shape[:-1])
        flat = x.detach().reshape(-1, x.shape[-1])
        rows = torch.arange(flat.shape[0])
        mask = self.token_mask
        if mask is not None and tuple(mask.shape) == lead:
            rows = rows[mask.reshape(-1).cpu()]
        rows = rows[: self.max_tokens]
        values = flat[rows.to(flat.device)].to(device="cpu", dtype=torch.float32)
        return Capture(self.step, values, rows, lead)

    def _on_root_call(self, module: nn.Module, args: tuple) -> None:
        self._calls += 1
        self.recording.steps = self._calls

    def _store_input(self, store: dict[str, list[Capture]], name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            capture = self._capture(main_input(args, kwargs))
            if capture is not None:
                store[name].append(capture)
        return hook

    def _on_block_output(self, name: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            out = main_output(output)
            capture = self._capture(out)
            if capture is None:
                return
            self.recording.block_out[name].append(capture)
            if self.grads and torch.is_grad_enabled() and out.requires_grad:
                self._handles.append(out.register_hook(self._on_output_grad(name, capture.step)))
        return hook

    def _on_output_grad(self, name: str, step: int):
        def hook(grad: Tensor) -> None:
            capture = self._capture(grad)
            if capture is not None:
                capture.step = step
                self.recording.block_out_grad[name].append(capture)
        return hook

    def _on_param_grad(self, name: str):
        def hook(grad: Tensor) -> None:
            self.recording.param_grad_sq[name][self.step] += metrics.l2_norm(grad) ** 2
        return hook

    def _on_attention(self, block: str):
        def hook(module: Attention, args: tuple, kwargs: dict, output: Any) -> None:
            x = main_input(args, kwargs)
            mask = kwargs.get("mask", args[1] if len(args) > 1 else None)
            if x is not None:
                self.recording.attention_logit[block].append(layer_max_logit(module, x, mask))
        return hook

    def _on_norm_output(self, name: str, norm: nn.Module):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            capture = self._capture(main_output(output))
            if capture is not None:
                self.recording.norm_out[name].append(capture)
            if isinstance(norm, Norm) and norm.info.scalars:
                self.recording.scalars[name].append(norm.recorded_scalars())
        return hook

    def _on_batch_norm_input(self, name: str, norm: Norm):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            x = main_input(args, kwargs)
            mask = kwargs.get("mask", args[1] if len(args) > 1 else None)
            if x is None or (mask is not None and not bool(mask.any())):
                return
            mean, var, _ = masked_moments(x.detach(), mask)
            running: dict[str, Tensor] = {}
            for key, buf in norm.named_buffers():  # nested: PRepBN keeps them in its RepBN
                leaf = key.rsplit(".", 1)[-1]
                if leaf in RUNNING_BUFFERS and leaf not in running:
                    running[leaf] = buf.detach().to("cpu", torch.float64, copy=True)
            self.recording.batch_moments[name].append(BatchMoments(
                self.step, mean.to("cpu", torch.float64), var.to("cpu", torch.float64), running))
        return hook
