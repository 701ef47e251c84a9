"""Pruning stays composed of small parts: no function in `prune/` runs over 60 lines (a method, a target kind and a
schedule are objects of their own, not branches of one loop), and its config names settings, never flags."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from spinn_export.cli import user_message
from spinn_export.errors import SettingError
from spinn_export.prune.config import PruneConfig
from spinn_export.prune.target import Target

PRUNE = Path(__file__).resolve().parents[1] / "spinn_export" / "prune"
LONGEST = 60


def lengths() -> dict[str, int]:
    """Every function's and method's length in lines (decorators and docstring included), by file:line name."""
    found = {}
    for path in sorted(PRUNE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                found[f"{path.name}:{node.lineno} {node.name}"] = (node.end_lineno or node.lineno) - first + 1
    return found


def test_no_function_in_prune_is_over_60_lines():
    assert lengths(), "the walk found no functions"
    assert {name: n for name, n in lengths().items() if n > LONGEST} == {}


@pytest.mark.parametrize("settings,named,flagged", [
    ({"on_drop": "stop"}, "on_drop stop needs tolerance", "--on-drop stop needs --tolerance"),
    ({"round_to": "sometimes"}, "round_to must be a positive integer or auto", "--round-to must be"),
    ({"backend": "ort-cpu"}, "only with latency_ratio or round_to auto", "only with --target-latency or --round-to"),
])
def test_config_names_settings_and_the_cli_gives_its_flags(settings, named, flagged):
    with pytest.raises(SettingError) as caught:
        PruneConfig(Target.params(0.5), **settings)
    assert named in str(caught.value) and "--" not in str(caught.value)
    assert flagged in user_message(caught.value)
