"""The package's import graph: no module imports, even lazily or for type checking only, a module that imports it
back, and the lower layers (metrics, data) never reach up into models, adapters, training or reporting."""

from __future__ import annotations

import ast
from pathlib import Path

import fairbench

PACKAGE = Path(fairbench.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("fairbench", *path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _import_graph() -> dict[str, dict[str, int]]:
    """Module -> {imported fairbench module: line}, for every import statement anywhere in the module."""
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import submodule` depends on the submodule; `from mod import name` on the module
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                if target.startswith("fairbench"):
                    resolved = owner(target)
                    if resolved and resolved != name and not name.startswith(resolved + ".") and resolved != "fairbench":
                        edges.setdefault(resolved, node.lineno)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, {}):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_graph_sees_lazy_and_type_checking_imports():
    graph = _import_graph()
    # driver imports the pipeline inside a function; reasons would import passes only for type checking
    assert "fairbench.pipeline" in graph["fairbench.sweep.driver"]
    assert "fairbench.metrics._kernels" in graph["fairbench.metrics._passes"]


def test_a_planted_circle_is_found():
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_circles():
    circles = _cycles(_import_graph())
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


LOWER = ("fairbench.metrics", "fairbench.data")
UPPER = ("fairbench.models", "fairbench.adapters", "fairbench.train", "fairbench.report", "fairbench.sweep",
         "fairbench.pipeline", "fairbench.cli")


def test_lower_layers_do_not_import_upper_ones():
    graph = _import_graph()
    upward = [f"{src}:{line} imports {dst}" for src, edges in graph.items() if src.startswith(LOWER)
              for dst, line in edges.items() if dst.startswith(UPPER)]
    assert not upward, "\n".join(upward)
