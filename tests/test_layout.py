"""The package's layout holds: no import circle, no task importing another, no layer importing a higher
one (runs < data < models < report < training < config < tasks), read from the source with ``ast``."""

import ast
from pathlib import Path

from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "brain_mri"
LAYERS = ("runs", "data", "models", "report", "training", "config", "tasks")
ENTRIES = ("brain_mri", "brain_mri.bench", "brain_mri.bench_data")  # the face and benchmarks: above all


def imports() -> dict[str, set[str]]:
    """Each module of the package and the modules of the package it imports (in functions too)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(("brain_mri", *path.relative_to(PACKAGE).with_suffix("").parts))
        name = name.removesuffix(".__init__")
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("brain_mri"):
                targets.add(node.module)
                targets |= {f"{node.module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name.startswith("brain_mri")}
        found[name] = targets - {name}
    return {name: {t for t in targets if t in found} for name, targets in found.items()}


def layer(module: str) -> int:
    """Its layer's rank; -1 for the foundations (errors, atomic writing, hardware)."""
    if module in ENTRIES:
        return len(LAYERS)
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else -1


def test_no_module_imports_itself_through_others():
    graph = imports()
    names = sorted(graph)
    edges = [(names.index(a), names.index(b)) for a in names for b in graph[a]]
    matrix = coo_matrix(([1] * len(edges), tuple(zip(*edges, strict=True))), shape=(len(names), len(names)))
    _, component = connected_components(matrix, directed=True, connection="strong")
    circles = [[n for n, c in zip(names, component, strict=True) if c == k] for k in set(component)]
    assert [circle for circle in circles if len(circle) > 1] == []


def test_no_task_imports_another_and_no_layer_a_higher_one():
    graph = imports()
    tasks = {name for name in graph if name.startswith("brain_mri.tasks.")}
    assert sorted((a, b) for a in tasks for b in graph[a] if b in tasks) == []
    climbs = [(a, b) for a, targets in graph.items() for b in targets if layer(b) > layer(a)]
    assert climbs == []
