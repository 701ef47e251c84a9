"""The fast lane, `pytest -m "not slow"`: every module of the package runs in it, so a change anywhere gets an answer
in about a minute. Slow tests (CLI and suite subprocesses, the tiny pipeline, real clusters) still run in CI's plain
`pytest`. What the lane covers, module by module:

    coverage run --source=spinn_export -m pytest -m "not slow" && coverage report

Here the cheap half of that promise: every module imports on its own (a module nothing fast imports fails here, not
minutes later in a subprocess), and the console entry point runs in this process."""
from __future__ import annotations

import importlib
import runpy
from pathlib import Path

import pytest

import spinn_export

from .test_layering import MODULES

MAIN = "spinn_export.__main__"  # runs the CLI when imported: run by path below
# (by path, not runpy.run_module: under `coverage run -m pytest` pytest's assertion-rewriting hook claims the package,
# an entry-point plug-in's, and runpy cannot get code from it)


@pytest.mark.parametrize("name", sorted(set(MODULES) - {MAIN}))
def test_every_module_imports_on_its_own(name: str) -> None:
    assert importlib.import_module(name).__name__ == name


def test_python_dash_m_runs_the_console_entry_point(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.argv", ["spinn-export", "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(Path(spinn_export.__file__).with_name("__main__.py")), run_name="__main__")
    assert exit_.value.code == 0
    assert "spinn-export" in capsys.readouterr().out


def test_the_slow_marker_is_registered_and_a_mistyped_marker_is_an_error(pytestconfig: pytest.Config) -> None:
    """A test marked `@pytest.mark.slwo` must fail collection, not silently stay in the fast lane."""
    assert "--strict-markers" in pytestconfig.getini("addopts")
    assert any(line.startswith("slow:") for line in pytestconfig.getini("markers"))
