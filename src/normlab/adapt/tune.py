"""Norm-only tuning: freeze a network except its normalization layers' own parameters.

    share = norm_only(model)                              # γ, β (and any scalar) of every norm
    share = norm_only(model, include=("norms", "head"))   # ... and the classifier
    print(share)      # "norms: 1,536 of 224,640 parameters trainable (0.68 %)"

"Training BatchNorm and Only BatchNorm: On the Expressive Power of Random Features in CNNs"
(Frankle, Schwab, Morcos, ICLR 2021) trains only the affine parameters of BatchNorm; LayerNorm
tuning adapts pretrained Transformers the same way ("Tuning LayerNorm in Attention: Towards
Efficient Multi-Modal LLM Finetuning", Zhao et al., 2023; De Min et al., "On the
Effectiveness of LayerNorm Fine-tuning for Continual Learning in Vision Transformers", 2023).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from normlab.selection import Where, find_modules, is_norm

PARTS = ("norms", "biases", "head")
HEAD = ("lm_head", "head")  # normlab's GPT / Llama and ViT classifiers


@dataclass(frozen=True)
class Trainable:
    """What `norm_only` left trainable: the parts, the parameter names and the counts."""

    include: tuple[str, ...]
    names: tuple[str, ...]
    trainable: int
    total: int

    @property
    def share(self) -> float:
        """trainable / total parameters (shared tensors counted once)."""
        return self.trainable / self.total

    def __str__(self) -> str:
        return (f"{'+'.join(self.include)}: {self.trainable:,} of {self.total:,} parameters "
                f"trainable ({100 * self.share:.2f} %)")


def parse_include(include: str | Iterable[str]) -> tuple[str, ...]:
    """("norms", "head") from "norms+head" or an iterable of part names (ValueError on others)."""
    parts = tuple(include.split("+")) if isinstance(include, str) else tuple(include)
    unknown = [p for p in parts if p not in PARTS]
    if not parts or unknown:
        raise ValueError(f"include: unknown or no part {unknown or parts!r}; choose from "
                         f"{', '.join(PARTS)} (joined by '+')")
    return parts


def norm_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters of every normalization layer (`normlab.selection.is_norm`) by name.

    ValueError when the model has no norm, or when none of its norms has a parameter
    (built with affine=False)."""
    norms = find_modules(model, lambda _, module: is_norm(module), root=True, nested=False)
    if not norms:
        raise ValueError(f"{type(model).__name__} has no normalization layer to tune")
    found = {f"{name}.{p}" if name else p: param for name, norm in norms
             for p, param in norm.named_parameters()}
    if not found:
        raise ValueError(f"the {len(norms)} norms of {type(model).__name__} have no affine "
                         "parameters (affine=False); there is nothing norm-only to train")
    return found


def _head_parameters(model: nn.Module, head: Where) -> dict[str, nn.Parameter]:
    heads = find_modules(model, head, root=False, nested=False)
    found = {f"{name}.{p}": param for name, module in heads
             for p, param in module.named_parameters()}
    if not found:
        raise ValueError(f"{type(model).__name__} has no classifier head matching {head!r} "
                         "with parameters")
    return found


def norm_only(model: nn.Module, include: str | Iterable[str] = ("norms",), *,
              head: Where = HEAD) -> Trainable:
    """Freeze every parameter of `model` except the parts in `include`, in place.

    Parts: "norms" — every parameter of every normalization layer (γ, β, DyT's α, ...);
    "biases" — every parameter named `bias`; "head" — the classifier, the modules selected by
    `head` (`lm_head` / `head` by default; with tied embeddings this is the token embedding
    too). Returns the `Trainable` report. Raises ValueError when a requested part is absent.
    """
    parts = parse_include(include)
    keep: dict[str, nn.Parameter] = {}
    if "norms" in parts:
        keep.update(norm_parameters(model))
    if "biases" in parts:
        biases = {n: p for n, p in model.named_parameters() if n.rsplit(".", 1)[-1] == "bias"}
        if not biases:
            raise ValueError(f"{type(model).__name__} has no bias parameters")
        keep.update(biases)
    if "head" in parts:
        keep.update(_head_parameters(model, head))
    chosen = {id(p) for p in keep.values()}
    for param in model.parameters():
        param.requires_grad_(id(param) in chosen)
    return Trainable(parts, tuple(n for n, p in model.named_parameters() if id(p) in chosen),
                     sum(p.numel() for p in model.parameters() if id(p) in chosen),
                     sum(p.numel() for p in model.parameters()))
