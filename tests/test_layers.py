"""The layers of maelstrom_run stand on each other without cycles.

The import graph is read with ``ast`` from every module: every ``import`` and ``from ... import``
anywhere in a module counts (inside functions and under ``TYPE_CHECKING`` too), relative imports
resolved. A lazy import still ties two modules together (a change to one can break the other), so
it is no excuse for a cycle.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterable
from pathlib import Path

import maelstrom_run

ROOT = Path(maelstrom_run.__file__).parent
PACKAGE = "maelstrom_run"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    # followlinks: maelstrom_run/apps is a link to the repository's apps/
    files = [
        Path(d) / f for d, _, names in os.walk(ROOT, followlinks=True) for f in names if f.endswith(".py")
    ]
    return {_module_name(p): p for p in sorted(files)}


def _resolve(target: str, modules: dict[str, Path]) -> str | None:
    """The module of ours that ``target`` names (a name imported from a module resolves to it)."""
    while target:
        if target in modules:
            return target
        target = target.rpartition(".")[0]
    return None


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            # ``from pkg import mod`` imports the module pkg.mod when there is one
            targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                resolved = _resolve(target, modules)
                if resolved is not None and resolved != name:
                    found.add(resolved)
    return found


def _full_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        here = _package(module)
        packages.setdefault(here, set()).update(_package(t) for t in targets if _package(t) != here)
    return packages


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one node (Tarjan), as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_in(component, graph) for component in components]


def _path_in(component: Iterable[str], graph: dict[str, set[str]]) -> list[str]:
    """A cycle through the first node of a strongly connected component (breadth-first)."""
    members = set(component)
    start = min(members)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph.get(node, set()) & members):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    return sorted(members)


def _report(cycles: list[list[str]]) -> str:
    return "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    graph = _full_graph()
    # relative, at module level
    assert "maelstrom_run.core.errors" in graph["maelstrom_run.core.spec"]
    # relative, inside a function (the commands import what they run lazily)
    assert "maelstrom_run.launch.registry" in graph["maelstrom_run.commands.runs"]


def test_no_cycle_between_modules() -> None:
    cycles = _cycles(_full_graph())
    assert not cycles, "import cycles between modules:\n" + _report(cycles)


def test_no_cycle_between_packages() -> None:
    cycles = _cycles(_package_graph(_full_graph()))
    assert not cycles, "import cycles between packages of maelstrom_run:\n" + _report(cycles)


def test_core_stands_on_nothing_else() -> None:
    bad = sorted(
        f"{module} -> {target}"
        for module, targets in _full_graph().items()
        if _package(module) == "core"
        for target in targets
        if _package(target) != "core"
    )
    assert not bad, "core imports other packages of maelstrom_run:\n" + "\n".join(bad)


def test_nothing_below_the_commands_imports_them() -> None:
    bad = sorted(
        f"{module} -> {target}"
        for module, targets in _full_graph().items()
        if _package(module) != "commands"
        for target in targets
        if _package(target) == "commands"
    )
    assert not bad, "modules below commands/ import it:\n" + "\n".join(bad)


def test_a_cycle_is_reported_as_its_path() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
