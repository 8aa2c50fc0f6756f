"""The package's imports point one way and form no circle, counting imports inside functions too."""

from __future__ import annotations

import ast

from conftest import REPO

PACKAGE = REPO / "src" / "engramlab"

# lowest first: a module may import from its own layer and the layers before it, never after
LAYERS = [
    ("base", ("engramlab.config", "engramlab.errors", "engramlab.threads")),
    ("engine", ("engramlab.engine",)),
    (
        "toolbox",
        (
            "engramlab.memory",
            "engramlab.ponder",
            "engramlab.models",
            "engramlab.tasks",
            "engramlab.evolve",
            "engramlab.space",
            "engramlab.rl",
        ),
    ),
    ("experiments", ("engramlab.experiments",)),
    ("commands", ("engramlab",)),  # cli, api, evaluate, report, bench, publish and the package itself
]


def module_name(path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def owner(name: str) -> str:
    """The module an imported name lives in (``engramlab.engine.plots.save`` -> ``engramlab.engine.plots``)."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports_of(name: str) -> set[str]:
    """Every engramlab module ``name`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("engramlab"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else owner(node.module))
        elif isinstance(node, ast.Import):
            found |= {owner(alias.name) for alias in node.names if alias.name.startswith("engramlab")}
    return found - {name}


def layer(name: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(name)


GRAPH = {name: imports_of(name) for name in MODULES}


def test_the_graph_sees_imports_inside_functions():
    assert "engramlab.engine.runner" in GRAPH["engramlab.cli"]  # cli imports it inside cmd_run


def test_imports_point_down_the_layers():
    upward = [
        f"{name} ({LAYERS[layer(name)][0]}) imports {target} ({LAYERS[layer(target)][0]})"
        for name, targets in GRAPH.items()
        for target in targets
        if layer(target) > layer(name)
    ]
    assert not upward, "\n".join(upward)


def test_no_two_modules_import_each_other_even_through_others():
    """Tarjan's strongly connected components of the import graph: every one must be a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not circles, circles
