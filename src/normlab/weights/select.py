"""Choosing the modules a weight-side normalization applies to (`normlab.selection`)."""

from __future__ import annotations

from torch import Tensor, nn

from normlab.selection import Predicate, find_modules

LINEAR_AND_CONV: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def select_modules(
    model: nn.Module,
    types: tuple[type[nn.Module], ...],
    predicate: Predicate | None = None,
    *,
    name: str = "weight",
    what: str = "this weight normalization",
) -> list[tuple[str, nn.Module]]:
    """`(qualified name, module)` for `model` and every submodule that is an instance of one of
    `types` and, if given, satisfies `predicate(qualified_name, module)`.

    The list is built before anything is changed, so callers may register parametrizations while
    walking it. Raises ValueError when nothing is selected (a silent no-op hides typos) or when a
    selected module has no parameter called `name`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"{what}: expected an nn.Module, got {type(model).__name__}")
    chosen = [
        (qualified, module)
        for qualified, module in find_modules(model, types, root=True, nested=True)
        if predicate is None or predicate(qualified, module)
    ]
    if not chosen:
        kinds = ", ".join(t.__name__ for t in types)
        raise ValueError(
            f"{what}: no module of type ({kinds}) matched in {type(model).__name__}; "
            f"pass `types=` or `predicate=` to select the layers"
        )
    for qualified, module in chosen:
        if not isinstance(getattr(module, name, None), Tensor):
            raise ValueError(
                f"{what}: module {qualified or '<root>'} ({type(module).__name__}) has no "
                f"parameter {name!r}"
            )
    return chosen

