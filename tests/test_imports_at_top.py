"""Imports sit at module top, where the real dependency graph can be read, unless an optional dependency (onnxruntime,
openvino, nncf, ray, distributed) or start-up time (torch, onnx, pandas, pytest kept out of the CLI's, the report's
and the plug-in listings' import) requires otherwise; each import left inside a function says which in a comment, on
its line or the line above (one comment heads a run of consecutive import lines)."""
from __future__ import annotations

import ast

from .test_layering import MODULES, PACKAGE

# Function-level imports without their comment, by file (none: every one says why).
KNOWN_UNCOMMENTED: dict[str, int] = {}


def function_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    functions = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
    found = {id(node): node for function in functions
             for node in ast.walk(function) if isinstance(node, ast.Import | ast.ImportFrom)}
    return sorted(found.values(), key=lambda node: node.lineno)


def commented(lines: list[str], node: ast.Import | ast.ImportFrom, import_lines: set[int]) -> bool:
    """A comment on the import's first line, or on the line above; above an import line, keep looking up."""
    if "#" in lines[node.lineno - 1]:
        return True
    line = node.lineno - 1
    while line >= 1:
        text = lines[line - 1].strip()
        if text.startswith("#") or (line in import_lines and "#" in text):
            return True
        if line not in import_lines:
            return False
        line -= 1
    return False


def uncommented() -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for path in sorted(set(MODULES.values())):
        source = path.read_text()
        lines = source.splitlines()
        nodes = function_level_imports(ast.parse(source))
        import_lines = {line for node in nodes for line in range(node.lineno, node.end_lineno + 1)}
        missing = [node.lineno for node in nodes if not commented(lines, node, import_lines)]
        if missing:
            found[path.relative_to(PACKAGE).as_posix()] = missing
    return found


def test_every_function_level_import_says_why() -> None:
    counts = {name: len(lines) for name, lines in uncommented().items()}
    assert counts == KNOWN_UNCOMMENTED, uncommented()


def test_the_check_finds_an_uncommented_import() -> None:
    source = "def f():\n    # optional: the cpu extra\n    import onnxruntime\n    import onnx\n\n    import numpy\n"
    lines = source.splitlines()
    nodes = function_level_imports(ast.parse(source))
    import_lines = {node.lineno for node in nodes}
    assert [commented(lines, node, import_lines) for node in nodes] == [True, True, False]
