"""The main job's resumability: a stage reruns exactly when its inputs, parameters or outputs changed."""
from pathlib import Path

import pytest

from spinn_export.errors import UserError
from spinn_export.pipeline.job import RunConfig, resolve_policy
from spinn_export.pipeline.stages import Stage, run_stage


def _stage(tmp_path: Path, calls: list[str], params: dict | None = None) -> Stage:
    source, product = tmp_path / "in.txt", tmp_path / "out.txt"

    def action() -> None:
        calls.append("ran")
        product.write_text(source.read_text().upper())

    return Stage("shout", (source,), params or {"level": 1}, (product,), action)


def test_stage_runs_once_then_is_reused(tmp_path):
    (tmp_path / "in.txt").write_text("a")
    calls: list[str] = []
    assert run_stage(_stage(tmp_path, calls), tmp_path, 1, 1) is True
    assert run_stage(_stage(tmp_path, calls), tmp_path, 1, 1) is False
    assert calls == ["ran"] and (tmp_path / "out.txt").read_text() == "A"


@pytest.mark.parametrize("change", ["input", "params", "output-edited", "output-deleted", "record-corrupt"])
def test_stage_reruns_when_anything_it_depends_on_changed(tmp_path, change):
    (tmp_path / "in.txt").write_text("a")
    calls: list[str] = []
    run_stage(_stage(tmp_path, calls), tmp_path, 1, 1)
    params = None
    if change == "input":
        (tmp_path / "in.txt").write_text("b")
    elif change == "params":
        params = {"level": 2}
    elif change == "output-edited":
        (tmp_path / "out.txt").write_text("tampered")
    elif change == "output-deleted":
        (tmp_path / "out.txt").unlink()
    else:
        (tmp_path / "stages" / "shout.json").write_text("{not json")
    assert run_stage(_stage(tmp_path, calls, params), tmp_path, 1, 1) is True
    assert calls == ["ran", "ran"]


def test_stage_that_fails_leaves_no_record(tmp_path):
    (tmp_path / "in.txt").write_text("a")

    def broken() -> None:
        raise UserError("boom")

    with pytest.raises(UserError):
        run_stage(Stage("broken", (tmp_path / "in.txt",), {}, (tmp_path / "out.txt",), broken), tmp_path, 1, 1)
    assert not (tmp_path / "stages" / "broken.json").exists()


def test_gate_policy_falls_back_when_the_project_policy_names_unmeasured_batches(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.spinn_export.gate]\nvariant = "structured"\nrules = [{backend = "ort-cpu", batch = 64, min_speedup = 2.0}]\n')
    quick = resolve_policy(RunConfig(quick=True))
    assert [(r.backend, r.batch) for r in quick.rules] == [("ort-cpu", 8192)]
    full = resolve_policy(RunConfig())
    assert [(r.backend, r.batch, r.min_speedup) for r in full.rules] == [("ort-cpu", 64, 2.0)]
