"""The package's modules import one another without a circle: every ``import`` of a
``fpzo_ray`` module counts, at the top of a file, inside a function (a deferred import still
ties two modules together) or under ``TYPE_CHECKING``."""

from __future__ import annotations

import ast
from pathlib import Path

from studies import ROOT

PACKAGE = ROOT / "fpzo_ray"


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules ``path`` imports (``from a import b`` counts ``a.b`` when that
    is a module, else ``a``)."""
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([node.module] if node.module else []))
            for alias in node.names:
                inner = f"{base}.{alias.name}"
                found.add(inner if inner in modules else base)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = {_module(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, set(paths)) for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_the_package_is_in_an_import_circle():
    graph = import_graph()
    assert len(graph) > 100 and "fpzo_ray.sim.server" in graph["fpzo_ray.sim.in_process"]
    assert cycles(graph) == []


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for module in graph[todo.pop()] - seen:
            seen.add(module)
            todo.append(module)
    return seen


def test_the_generic_algorithm_interface_and_bp_reach_nothing_of_zo():
    """``algorithms/`` (the interface every algorithm implements, BP FedAvg) and ``bp/`` are
    free of the ZO method: no import, direct or through another module, reaches ``zo/``."""
    graph = import_graph()
    starts = [m for m in graph if f"{m}.".startswith(("fpzo_ray.algorithms.", "fpzo_ray.bp."))]
    assert "fpzo_ray.algorithms.bp_fedavg" in starts and "fpzo_ray.bp.client_update" in starts
    leaks = {
        start: sorted(m for m in reachable(graph, start) if m.startswith("fpzo_ray.zo"))
        for start in starts
    }
    assert {start: found for start, found in leaks.items() if found} == {}


def test_the_zo_method_does_not_import_its_execution_strategies_by_name_in_algorithms():
    """The ZO algorithms are written against the method (``zo.client_update``), never
    against a particular execution strategy (``zo.execution``), which the workspace picks."""
    graph = import_graph()
    for module in graph:
        if module.startswith("fpzo_ray.zo.algorithms"):
            assert not {m for m in graph[module] if m.startswith("fpzo_ray.zo.execution")}


def test_the_engine_and_the_mathematics_reach_nothing_of_the_orchestration_above_them():
    """``docs/ARCHITECTURE.md``'s layers: the engine (``sim/``) and everything below it never
    import the lifecycle's implementations, the sweep, MLflow tracking, the reports or the
    entry points (the round loop's hooks are the engine's own, ``sim/callbacks.py``)."""
    graph = import_graph()
    below = ("sim", "algorithms", "zo", "bp", "optim", "pruning", "models", "data", "accounting")
    above = ("fpzo_ray.lifecycle", "fpzo_ray.sweep", "fpzo_ray.tracking", "fpzo_ray.report")
    above += ("fpzo_ray.run", "fpzo_ray.mlflow_writer")
    leaks = {
        start: sorted(m for m in reachable(graph, start) if m.startswith(above))
        for start in graph
        if start.split(".")[1:2] and start.split(".")[1] in below
    }
    assert {start: found for start, found in leaks.items() if found} == {}
