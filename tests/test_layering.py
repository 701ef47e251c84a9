"""Data flows one way through the stages: model -> task -> prune -> export -> bench -> report, with pipeline and
cli on top. A stage imports only earlier stages, at module level or inside a function; what it needs from a later
one (pruning's latency measurer) is handed in."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "spinn_export"
ORDER = ("model", "task", "prune", "export", "bench", "report", "pipeline", "cli")


def imported_stages(path: Path) -> set[str]:
    """Every spinn_export stage a module imports, wherever in the module the import is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
            [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "spinn_export" and len(parts) > 1 and parts[1] in ORDER:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("stage", ORDER[:3])
def test_the_early_stages_import_no_later_stage(stage):
    later = set(ORDER[ORDER.index(stage) + 1:])
    offenders = {str(path.relative_to(PACKAGE)): sorted(imported_stages(path) & later)
                 for path in sorted((PACKAGE / stage).rglob("*.py")) if imported_stages(path) & later}
    assert not offenders
