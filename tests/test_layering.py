"""Data flows one way through the stages: model -> task -> prune -> export -> bench -> report, with pipeline and
cli on top, and the runtimes below export and bench. A stage imports only earlier stages, at module level or inside a
function; what it needs from a later one (pruning's latency measurer) is handed in. No module imports itself back
through others."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "spinn_export"
ORDER = ("model", "task", "prune", "runtimes", "export", "bench", "report", "pipeline", "cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports(path: Path) -> set[str]:
    """Every spinn_export module a module imports, wherever in it (a function's body included): `from a import b`
    counts b where b is a module, else a."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                         for a in node.names)
    return {name for name in found if name in MODULES}


GRAPH = {name: imports(path) - {name} for name, path in MODULES.items()}


def stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in ORDER else None


@pytest.mark.parametrize("name", ORDER)
def test_no_stage_imports_a_later_stage(name):
    later = set(ORDER[ORDER.index(name) + 1:])
    offenders = {module: sorted({stage(i) for i in imported} & later) for module, imported in GRAPH.items()
                 if stage(module) == name and {stage(i) for i in imported} & later}
    assert not offenders


def test_no_module_imports_itself_through_others():
    """Tarjan's strongly connected components: every one must be a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in GRAPH[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    assert not cycles


def test_the_check_sees_function_level_imports():
    """The walk reads imports inside functions: the prune CLI's measurer is imported lazily there."""
    assert "spinn_export.bench.measurer" in GRAPH["spinn_export.cli"]
