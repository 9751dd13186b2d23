"""`diagnose`: record a model on a few batches and return the diagnostics dict.

    report = diagnose(model, batches)                  # forward + backward per batch, then
    schema.write(report, "out/diagnostics.json")       # one skip-a-block pass per block

A batch is whatever the model takes: a tensor (`model(batch)`), a tuple (`model(*batch)`) or a
mapping (`model(**batch)`, e.g. HuggingFace's input_ids / attention_mask / labels).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from normlab.batches import Batch, call_model
from normlab.diagnostics.ablation import skip_block_losses
from normlab.diagnostics.outliers import add_norm_outliers
from normlab.diagnostics.recorder import Recorder, main_output
from normlab.diagnostics.select import Selector
from normlab.diagnostics.summarize import summarize

LossFn = Callable[[nn.Module, Batch], Tensor]


def returned_loss(output: Any) -> Tensor | None:
    """The loss a model returned: `output.loss` (HuggingFace), `output["loss"]`, or the scalar
    second entry of a `(logits, loss)` pair (normlab's GPT and ViT); else None."""
    if isinstance(output, Mapping):
        return output.get("loss")
    if isinstance(output, tuple | list) and len(output) == 2:
        loss = output[1]
        return loss if isinstance(loss, Tensor) and loss.numel() == 1 else None
    return None


def default_loss(model: nn.Module, batch: Batch) -> Tensor:
    """The model's own loss when it returns one (pass targets/labels in the batch); otherwise
    the proxy ½·mean(h²) of its main output h (last hidden state or logits), so that encoders
    without a head still get a backward pass. The proxy's gradient is h / numel(h)."""
    output = call_model(model, batch)
    loss = returned_loss(output)
    if loss is not None:
        return loss
    hidden = main_output(output)
    if hidden is None:
        raise ValueError(f"{type(model).__name__} returned {type(output).__name__}: neither a "
                         "loss nor a tensor; pass loss_fn=(model, batch) -> scalar tensor")
    return 0.5 * hidden.float().square().mean()


def token_mask(batch: Batch) -> Tensor | None:
    """The (B, T) real-token mask of a mapping batch (`attention_mask` or `mask`), if any."""
    if isinstance(batch, Mapping):
        for key in ("attention_mask", "mask"):
            value = batch.get(key)
            if isinstance(value, Tensor) and value.dim() == 2:
                return value.bool()
    return None


def diagnose(
    model: nn.Module,
    batches: Sequence[Batch],
    *,
    loss_fn: LossFn | None = None,
    blocks: Selector = None,
    norms: Selector = None,
    backward: bool = True,
    skip: bool = True,
    max_tokens: int | None = 2048,
    top_k: int = 10,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Record `model` on `batches` and return the diagnostics dict (schema.py).

    Args:
        batches: one or more batches; each is one recorded step.
        loss_fn: (model, batch) -> scalar; default `default_loss`.
        blocks, norms: selectors (select.py); None auto-detects.
        backward: run backward on each loss (gradient metrics). Existing `.grad` values of the
            model's parameters are put back afterwards.
        skip: fill each block's `skip_loss_delta` from the first batch (1 + L extra forwards).
        max_tokens, top_k: see `Recorder` and `summarize`.
        meta: stored under "meta" in the result.

    The model's train/eval mode is left as it is: call `model.eval()` first for deterministic
    numbers (dropout) and running statistics, `model.train()` to see batch statistics at work.
    """
    if not batches:
        raise ValueError("diagnose needs at least one batch")
    loss_fn = loss_fn or default_loss
    params = list(model.parameters())
    saved_grads = [p.grad for p in params]
    try:
        with Recorder(model, blocks=blocks, norms=norms, max_tokens=max_tokens,
                      grads=backward) as recorder:
            for batch in batches:
                recorder.token_mask = token_mask(batch)
                if backward:
                    loss_fn(model, batch).backward()
                else:
                    with torch.no_grad():
                        loss_fn(model, batch)
    finally:
        for p, grad in zip(params, saved_grads, strict=True):
            p.grad = grad
    info = {"loss_fn": getattr(loss_fn, "__name__", type(loss_fn).__name__),
            "batches": len(batches), "training_mode": model.training}
    report = summarize(recorder.recording, top_k=top_k, meta={**info, **(meta or {})})
    add_norm_outliers(report, recorder.recording, model)
    if skip:
        base, deltas = skip_block_losses(model, lambda m: loss_fn(m, batches[0]), blocks=blocks)
        for entry, delta in zip(report["blocks"], deltas, strict=True):
            entry["skip_loss_delta"] = delta
        report["skip"] = {"base_loss": base, "batch": 0}
    return report
