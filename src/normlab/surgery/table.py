"""The table of docs/surgery.md: every operation on every small-config model of `zoo.ZOO`.

    python -m normlab.surgery.table > table.md

Each cell is what the call did: "exact" with the measured max relative output error (the
report's probe: logits, else the last hidden state), "approx." with that error, or
"refused" with a numbered reason listed under the table. Where `fold_norms` refuses, the cell
also gives the result of folding the norms that can fold (`where=` those sites).
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable

from torch import nn

from normlab.surgery.adapters import get_adapter
from normlab.surgery.convert import to_crmsnorm, to_rmsnorm
from normlab.surgery.fold import fold_norms
from normlab.surgery.swap import swap_norms
from normlab.surgery.translate import read_norm
from normlab.surgery.zoo import ZOO, build


def same_family(model: nn.Module) -> str:
    """"layernorm" or "rmsnorm": what every norm of `model` computes (swapping to it is exact)."""
    layout = get_adapter(model).layout(model)
    kinds = {read_norm(model.get_submodule(s.path)).kind for s in layout.norms}
    if len(kinds) != 1:
        raise ValueError(f"norms of several families: {sorted(kinds)}")
    return kinds.pop()


def foldable(model: nn.Module) -> list[str]:
    """The norm sites whose output only Linears read."""
    return [s.path for s in get_adapter(model).layout(model).norms
            if s.role != "post" and s.readers]


OPERATIONS: dict[str, Callable[[nn.Module], object]] = {
    "swap → same": lambda m: swap_norms(m, same_family(m)),
    "swap → dyt": lambda m: swap_norms(m, "dyt", approximate=True),
    "fold_norms": fold_norms,
    "fold (FlashNorm)": functools.partial(fold_norms, flash=True),
    "to_rmsnorm": to_rmsnorm,
    "to_crmsnorm": to_crmsnorm,
}


def _short(err: ValueError) -> str:
    """The reason without the operation's name, layer numbers or the closing boilerplate."""
    text = str(err).split(": ", 1)[-1].split("; refusing")[0]
    return re.sub(r"\.\d+\.", ".N.", text)


def run(name: str, model: nn.Module, reasons: list[str]) -> dict[str, str]:
    """One row: operation -> cell."""
    row = {}
    for op, call in OPERATIONS.items():
        try:
            _, report = call(copy.deepcopy(model))
            kind = "exact" if report.exact else "approx."
            row[op] = f"{kind} {report.max_rel_error:.0e}"
        except ValueError as err:
            reason = _short(err)
            if reason not in reasons:
                reasons.append(reason)
            row[op] = f"refused ({reasons.index(reason) + 1})"
            if op.startswith("fold") and foldable(model):
                sites = foldable(model)
                _, report = call(copy.deepcopy(model), sites)
                row[op] += f"; {len(sites)} others: exact {report.max_rel_error:.0e}"
    return row


def markdown() -> str:
    reasons: list[str] = []
    lines = ["| model | class | " + " | ".join(OPERATIONS) + " |",
             "|---" * (len(OPERATIONS) + 2) + "|"]
    for name in ZOO:
        model = build(name)
        row = run(name, model, reasons)
        lines.append(f"| {name} | {type(model).__name__} | "
                     + " | ".join(row[op] for op in OPERATIONS) + " |")
    lines.append("")
    lines += [f"{i}. {reason}" for i, reason in enumerate(reasons, 1)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
