"""docs/ARCHITECTURE.md is the map a new engineer reads first, so it is held to the code: every file and module it
names exists, every `module.name` it names is defined in that module (not only imported there), every module of a
stage is on its stage's line, every subpackage of spinn_export is on the map, and the plug-ins it lists as built in
are exactly pyproject.toml's entry points."""
from __future__ import annotations

import ast
import functools
import re

import pytest

from spinn_export.report.gate import tomllib  # tomllib, or tomli before Python 3.11

from .test_layering import MODULES, PACKAGE

ROOT = PACKAGE.parent
MAP = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
PROSE = re.sub(r"```.*?```", "", MAP, flags=re.DOTALL)  # the manifest's example is JSON, not names
BLOCK = MAP.split("Data flows one way", 1)[1].split("\nShared, stage-free modules", 1)[0]
ENTRY_POINTS: dict[str, dict[str, str]] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
    "entry-points"]
FILE = re.compile(r"\.(json|csv|md|html|png|py|safetensors|toml|ini|txt|pt2|onnx)$")
# Dotted names in the map that are not Python: the checkpoint's metadata keys and the entry-point groups.
NOT_PYTHON = {"spinn_export.graph", "spinn_export.schema", "spinn_export.format", *ENTRY_POINTS}
LIBRARIES = {"torch", "onnx", "onnxruntime", "openvino", "nncf"}  # `torch.fx...` is the library, not runtimes.torch
SHORT = {name.rsplit(".", 1)[-1]: [m for m in MODULES if m.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]]
         for name in MODULES if name.rsplit(".", 1)[-1] not in LIBRARIES}


@functools.cache
def defined(module: str) -> dict[str, ast.AST | None]:
    """What a module defines at top level (functions, classes, assignments), with the class bodies to look into."""
    names: dict[str, ast.AST | None] = {}
    for node in ast.parse(MODULES[module].read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update({n.id: None for n in ast.walk(target) if isinstance(n, ast.Name)})
    return names


def resolves(dotted: str) -> bool:
    """A module, or a module and a name it defines (and a member of that class)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        if module in MODULES:
            rest = parts[cut:]
            if not rest:
                return True
            node = defined(module).get(rest[0], False)
            if node is False:
                return False
            if len(rest) == 1 or not isinstance(node, ast.ClassDef):
                return len(rest) == 1
            return any(getattr(member, "name", None) == rest[1] or
                       any(getattr(t, "id", None) == rest[1] for t in getattr(member, "targets", [])) or
                       getattr(getattr(member, "target", None), "id", None) == rest[1] for member in node.body)
    return False


def named_modules() -> list[str]:
    """Every backticked `a.b...` in the map whose first part is a stage, a shared module or a module's own name."""
    found = []
    for text in re.findall(r"`([^`]+)`", PROSE):
        match = re.match(r"[A-Za-z_][\w.]*\w", text)
        if not match or "." not in match.group() or FILE.search(match.group()) or match.group() in NOT_PYTHON:
            continue
        name = match.group().removeprefix("spinn_export.")
        if name.split(".")[0] in {m.split(".")[1] for m in MODULES if m.count(".")} | set(SHORT):
            found.append(name)
    return sorted(set(found))


def full_names(name: str) -> list[str]:
    first = name.split(".")[0]
    if f"spinn_export.{first}" in MODULES:
        return [f"spinn_export.{name}"]
    return [f"{module}.{name.split('.', 1)[1]}" for module in SHORT.get(first, [])]


@pytest.mark.parametrize("name", named_modules())
def test_every_module_and_name_on_the_map_exists(name: str) -> None:
    assert any(resolves(full) for full in full_names(name)), f"docs/ARCHITECTURE.md names `{name}`: not in the code"


def map_files() -> list[tuple[str, str]]:
    """(stage folder, path) for every file the map's diagram names, in the stage whose line it is on."""
    found, stage = [], ""
    for line in BLOCK.splitlines():
        head = re.match(r" {4}(\w+)/", line)
        if head:
            stage = head.group(1)
        found += [(stage, path) for path in re.findall(r"[\w<>*]+(?:/[\w<>*]+)*\.py", line)]
    return found


@pytest.mark.parametrize(("stage", "path"), map_files())
def test_every_file_on_the_map_exists(stage: str, path: str) -> None:
    pattern = path.replace("<name>", "*").replace("<command>", "*")
    assert any(list(base.glob(pattern)) for base in (ROOT, PACKAGE, PACKAGE / stage)), f"{stage}/: {path}"


def test_every_stage_module_is_on_its_stage_line() -> None:
    """A plug-in folder is on the map as `<name>.py`, the CLI as `<command>.py`; every other module by its name."""
    named = {(stage, path.rsplit("/", 1)[-1]) for stage, path in map_files()}
    modules = {(p.parent.name, p.name) for p in PACKAGE.glob("*/*.py") if p.name != "__init__.py"}
    assert not sorted(m for m in modules if m not in named and (m[0], "<command>.py") not in named)


def test_every_subpackage_is_on_the_map() -> None:
    packages = [p.parent.relative_to(PACKAGE) for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE]
    stages = set(re.findall(r"^ {4}(\w+)/", BLOCK, re.MULTILINE))
    missing = [str(p) for p in packages if (p.name not in stages if len(p.parts) == 1 else f"{p.name}/" not in BLOCK)]
    assert not missing


def test_every_shared_module_is_on_the_map() -> None:
    shared = MAP.split("Shared, stage-free modules", 1)[1].split("Shared rules", 1)[0]
    modules = {p.name for p in PACKAGE.glob("*.py")} - {"__init__.py", "__main__.py"}
    assert not [m for m in sorted(modules) if f"`{m}`" not in shared]


def built_in(group: str) -> set[str]:
    """The names the map's bullet for an entry-point group lists after "Built in:"."""
    bullet = re.search(rf"^\* `{re.escape(group)}` ->.*?(?=^\* |^## )", MAP, re.MULTILINE | re.DOTALL)
    assert bullet, f"docs/ARCHITECTURE.md has no bullet for the entry-point group {group}"
    listed = bullet.group().split("Built in:", 1)
    assert len(listed) == 2, f"the {group} bullet lists nothing as built in"
    names = listed[1]
    while re.search(r"\([^()]*\)", names):  # what a plug-in is, in parentheses, is not a name
        names = re.sub(r"\([^()]*\)", "", names)
    return set(re.findall(r"`([\w-]+)`", re.split(r"\.\s", names, maxsplit=1)[0]))


@pytest.mark.parametrize("group", sorted(set(ENTRY_POINTS) - {"pytest11"}))
def test_the_built_in_plug_ins_are_the_entry_points(group: str) -> None:
    assert built_in(group) == set(ENTRY_POINTS[group])


def test_the_pytest_plug_in_on_the_map_is_the_entry_point() -> None:
    [target] = ENTRY_POINTS["pytest11"].values()
    assert f"* `pytest11` -> `{target.removeprefix('spinn_export.')}`" in MAP


def test_the_map_orders_the_stages_as_the_layering_test() -> None:
    from .test_layering import ORDER

    stages = [s for s in re.findall(r"^ {4}(\w+)/", BLOCK, re.MULTILINE) if s in ORDER]
    assert stages == list(ORDER)
