"""Dependencies point one way: functional < kernels < norms < blocks < models < surgery,
diagnostics, hf < bench < cli.

`normlab.norms.functional` (the pure maths) is the bottom: the kernels are checked against it,
and the norm modules call the kernels' dispatch. `transformers` stays out of the maths (norms,
weights, kernels, blocks, models).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "normlab"

# package -> normlab packages it must never import
FORBIDDEN = {
    "norms": {"weights", "blocks", "models", "surgery", "diagnostics", "bench", "cli", "hf"},
    "weights": {"blocks", "models", "surgery", "diagnostics", "bench", "cli", "hf"},
    "kernels": {"norms", "weights", "blocks", "models", "surgery", "diagnostics", "bench", "cli",
                "hf"},
    "blocks": {"models", "surgery", "diagnostics", "bench", "cli", "hf"},
    "models": {"surgery", "diagnostics", "bench", "cli", "hf"},
    "surgery": {"bench", "cli"},
    "diagnostics": {"bench", "cli"},
    "hf": {"surgery", "diagnostics", "bench", "cli"},
    "bench": {"cli"},
}
NO_TRANSFORMERS = {"norms", "weights", "kernels", "blocks", "models"}
# The one import allowed against the direction above: kernels check against the pure maths.
ALLOWED = {("kernels", "normlab.norms.functional")}


def allowed(package: str, module: str) -> bool:
    return any(p == package and (module + ".").startswith(m + ".") for p, m in ALLOWED)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from normlab import kernels` names a subpackage: record module.name for each
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


FILES = sorted(p for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_one_way(path):
    package = path.relative_to(SRC).parts[0].removesuffix(".py")
    for module in imported_modules(path):
        parts = module.split(".")
        if parts[0] == "normlab" and len(parts) > 1 and not allowed(package, module):
            assert parts[1] not in FORBIDDEN.get(package, set()), (
                f"normlab.{package} must not import {module}"
            )
        if package in NO_TRANSFORMERS:
            assert parts[0] != "transformers", f"normlab.{package} must not import transformers"
