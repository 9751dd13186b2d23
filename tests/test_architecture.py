"""Dependencies point one way, and no two normlab modules import each other in a loop.

The layers, bottom first; a module may import its own layer and the layers below it:

    functional, configs, version,   pure maths and plain Python, nothing of normlab
    registry, batches
    kernels                         fused ops, checked against `normlab.functional`
    norms                           the zoo (calls the kernels)
    selection                       choosing modules of a network; the one `is_norm` rule
    weights, optim                  weight-side normalizations; optimizers for scale-invariant
                                    weights
    blocks, models                  placements, then GPT / ViT
    surgery, diagnostics, hf,       on any nn.Module, and the round trip with transformers;
    adapt                           norm-only tuning and test-time normalization
                                    (the loop check keeps them apart)
    bench                           uses everything
    study                           settles claims through the bench
    the root `normlab`              the public API: only cli imports it
    cli

Every import form counts: `import a.b`, `from a import b` (b a submodule or a name),
relative imports resolved to the absolute module, imports inside functions. Importing a
module also runs the `__init__` of every package above it that the importer is not already
inside, so that counts as an import of those packages too. Only the packages that exist to talk
to HuggingFace import `transformers`.
"""

from __future__ import annotations

import ast
import itertools
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "normlab"
ROOT = "normlab"

LAYERS: list[set[str]] = [
    {"functional", "configs", "version", "registry", "batches"},
    {"kernels"},
    {"norms"},
    {"selection"},
    {"weights", "optim"},
    {"blocks"},
    {"models"},
    {"surgery", "diagnostics", "hf", "adapt", "quant"},
    {"bench"},
    {"study"},
    {ROOT},
    {"cli"},
]
RANK = {part: rank for rank, layer in enumerate(LAYERS) for part in layer}
TALKS_TO_HUGGINGFACE = {"surgery", "hf"}

def module_name(path: Path, src: Path = SRC) -> str:
    """`normlab.norms.rms` for src/normlab/norms/rms.py, `normlab.norms` for its __init__."""
    parts = path.relative_to(src).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((ROOT, *parts))


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


FILES = sorted(SRC.rglob("*.py"))
MODULES = {module_name(p): p for p in FILES}


def imports(source: str, module: str, package: bool, known: set[str]) -> set[str]:
    """The absolute names of the modules that `source` (the text of `module`) imports.

    `from a import b` counts as importing the module `a.b` when `known` holds it, else `a`.
    Relative imports resolve against the module's package (the module itself for an
    `__init__`). Names outside normlab are kept as written (their top-level package matters).
    """
    here = module if package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return found


def executed(importer: str, target: str) -> set[str]:
    """`target` and the packages above it whose `__init__` importing it runs from `importer`:
    every enclosing package of `target` except those that also enclose `importer` (and the
    root, which encloses everything)."""
    parts = target.split(".")
    enclosing = {".".join(parts[:i]) for i in range(2, len(parts))}
    return {target} | {p for p in enclosing if not (importer + ".").startswith(p + ".")}


def graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the normlab modules importing it executes (see `executed`)."""
    known = set(modules)
    edges: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = imports(path.read_text(), module, is_package(path), known)
        edges[module] = {
            done
            for target in targets
            if target == ROOT or target.startswith(ROOT + ".")
            for done in executed(module, target)
            if done != module
        }
    return edges


def layer(module: str) -> str:
    """The layer a normlab module belongs to: its first name below the root (or the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def upward(module: str, targets: set[str]) -> list[str]:
    """The imports of `module` that point up the layers, or into the root from below cli."""
    rank = RANK[layer(module)]
    return sorted(t for t in targets if RANK.get(layer(t), len(LAYERS)) > rank)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import loop of `edges` as [a, b, ..., a], each importing the next, or None."""
    try:
        TopologicalSorter(edges).prepare()
    except CycleError as error:  # graphlib lists each node before the node that needs it
        return list(reversed(error.args[1]))
    return None


GRAPH = graph(MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_has_a_layer(module):
    assert layer(module) in RANK, (
        f"{module}: place normlab.{layer(module)} in LAYERS of tests/test_architecture.py"
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    up = upward(module, GRAPH[module])
    assert not up, f"{module} (layer {layer(module)}) imports {', '.join(up)} above it"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_huggingface_side_imports_transformers(module):
    path = MODULES[module]
    found = imports(path.read_text(), module, is_package(path), set(MODULES))
    if any(name.split(".")[0] == "transformers" for name in found):
        assert layer(module) in TALKS_TO_HUGGINGFACE, (
            f"{module} imports transformers; only {sorted(TALKS_TO_HUGGINGFACE)} may: take the "
            f"loaded model as an argument, or load it through normlab.surgery"
        )


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


# The checker itself, on made-up sources.

KNOWN = {"normlab", "normlab.kernels", "normlab.norms", "normlab.norms.rms",
         "normlab.norms.functional", "normlab.bench", "normlab.bench.report"}


@pytest.mark.parametrize(("source", "module", "package", "expected"), [
    ("import normlab", "normlab.norms.rms", False, {"normlab"}),
    ("from normlab import make_norm", "normlab.norms.rms", False, {"normlab"}),
    ("from normlab import kernels", "normlab.norms.rms", False, {"normlab.kernels"}),
    ("import normlab.bench.report as r", "normlab.norms.rms", False, {"normlab.bench.report"}),
    ("from .. import bench", "normlab.norms.rms", False, {"normlab.bench"}),
    ("from ..bench import report", "normlab.norms.rms", False, {"normlab.bench.report"}),
    ("from ..bench.report import x", "normlab.norms.rms", False, {"normlab.bench.report"}),
    ("from . import rms", "normlab.norms", True, {"normlab.norms.rms"}),
    ("from .. import kernels", "normlab.norms", True, {"normlab.kernels"}),
    ("def f():\n    import transformers", "normlab.norms.rms", False, {"transformers"}),
])
def test_imports_resolve_every_form(source, module, package, expected):
    assert imports(source, module, package, KNOWN) == expected


def test_an_upward_import_is_reported():
    assert upward("normlab.norms.rms", {"normlab", "normlab.kernels", "normlab.bench.report"}
                  ) == ["normlab", "normlab.bench.report"]
    assert upward("normlab.cli", {"normlab", "normlab.bench"}) == []


def test_importing_a_submodule_runs_the_packages_above_it():
    assert executed("normlab.kernels.reference", "normlab.norms.functional") == {
        "normlab.norms.functional", "normlab.norms"}
    assert executed("normlab.norms.rms", "normlab.norms.functional") == {
        "normlab.norms.functional"}


def test_a_cycle_is_found_and_named():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    loop = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    cycle = find_cycle(loop)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert all(after in loop[before] for before, after in itertools.pairwise(cycle))


def test_the_old_kernels_to_norms_loop_would_be_found(tmp_path):
    """kernels importing the maths through `normlab.norms` runs norms/__init__, which imports
    the kernels back: the loop this test exists for."""
    for name, text in {
        "__init__.py": "",
        "kernels/__init__.py": "from normlab.kernels.reference import f",
        "kernels/reference.py": "from normlab.norms import functional",
        "norms/__init__.py": "from normlab.norms import rms",
        "norms/functional.py": "",
        "norms/rms.py": "from normlab import kernels",
    }.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    modules = {module_name(p, tmp_path): p for p in tmp_path.rglob("*.py")}
    cycle = find_cycle(graph(modules))
    assert cycle is not None and "normlab.kernels.reference" in cycle
