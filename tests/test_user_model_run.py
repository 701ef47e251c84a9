"""Acceptance: the README's worked example as a user runs it, from an empty folder: their data (a CSV), their
physics and a U/V-gated "modified MLP" trained by the README's own code and saved as a torch.export program, through
`spinn-export run --model model.pt2 ... --quick`, every real stage (import, pruning with the physics, export, the
benchmark suite, report, gate)."""
from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from spinn_export.defaults import HEADLINE_BACKEND
from spinn_export.files import sha256_of
from spinn_export.model.checkpoint import load_checkpoint
from spinn_export.pipeline.config import RunConfig, UserModel
from spinn_export.pipeline.job import default_policy
from spinn_export.report.gate import run_gate
from spinn_export.task.data import load_user_dataset
from spinn_export.task.metrics import evaluate
from spinn_export.task.physics import load_physics

from .conftest import REPO, CliResult, assert_clean_error, run_cli
from .user_problem import INPUTS, TARGETS, write_problem

SECTION = "## Your network, start to finish"


def readme_example() -> tuple[str, list[str]]:
    """The worked example's Python (what trains and saves model.pt2) and its `spinn-export run` arguments."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ", len(SECTION))]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    command = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    words = shlex.split(command)
    assert words[:2] == ["spinn-export", "run"]
    return code, words[1:]


@dataclass(frozen=True)
class UserRun:
    folder: Path
    out: Path
    first: CliResult
    again: CliResult
    arguments: tuple[str, ...]


@pytest.fixture(scope="module")
def user_run(tmp_path_factory: pytest.TempPathFactory) -> UserRun:
    folder = tmp_path_factory.mktemp("user")
    problem = write_problem(folder, fit_steps=0)
    problem.model.unlink()  # the README's code trains and saves the model
    code, arguments = readme_example()
    (folder / "make_model.py").write_text(code)
    made = subprocess.run([sys.executable, "make_model.py"], cwd=folder, capture_output=True, text=True, check=False)
    assert made.returncode == 0, made.stderr[-3000:]
    (folder / "make_model.py").unlink()
    out = arguments[arguments.index("--out") + 1]
    arguments = (*arguments, "--quick")
    first = run_cli(*arguments, cwd=folder)
    again = run_cli(*arguments, cwd=folder)
    return UserRun(folder, folder / out, first, again, arguments)


@pytest.mark.slow
def test_the_run_reports_and_exits_with_the_gates_verdict(user_run):
    assert user_run.first.returncode in (0, 1), user_run.first.stderr[-3000:]
    quick = RunConfig(quick=True, model=UserModel(Path("model.pt2"), Path("data.csv"), INPUTS, TARGETS))
    # structured >= dense at the largest batch, and at most --max-r2-drop of validation R² lost (its pruning history)
    verdict = run_gate(user_run.out / "bench.json", default_policy(quick))
    assert verdict.rows["rule"].tolist() == ["min speedup", "max R² drop"]
    assert verdict.rows["backend"].iloc[0] == HEADLINE_BACKEND
    assert user_run.first.returncode == verdict.exit_code
    assert ("gate passed" if verdict.passed else "gate FAILED") in user_run.first.stdout
    report = user_run.out / "report"
    assert (report / "report.html").stat().st_size > 0
    markdown = (report / "report.md").read_text()
    assert "spinn-export run --model model.pt2 --data data.csv" in markdown
    assert "--physics physics.py:residual" in markdown
    assert "torch.export program (.pt2)" in markdown  # the architecture section names where it was read from
    groups = [line for line in markdown.splitlines() if line.startswith("| u ") or line.startswith("| first ")]
    assert len(groups) == 2
    assert sorted(p.name for p in user_run.folder.iterdir()) == ["data.csv", "model.pt2", "physics.py", "runs"]


@pytest.mark.slow
def test_the_console_says_what_was_read_as_the_readme_shows(user_run):
    text = (REPO / "README.md").read_text()
    shown = re.search(r"It prints what it read, `(imported [^`]*)`", text.replace("\n", " ")).group(1)
    printed = [line.strip() for line in user_run.first.stdout.splitlines() if line.strip().startswith("imported")]
    assert printed == [shown]


@pytest.mark.slow
def test_the_imported_model_is_pruned_with_the_users_physics_recorded_per_stage(user_run):
    dense = load_checkpoint(user_run.out / "dense.safetensors")
    architecture = dense.network.architecture
    assert (architecture.in_features, architecture.out_features, architecture.source) == (len(INPUTS), 3, "pt2")
    assert architecture.group_names == ("u", "first") and architecture.widths == (64, 64)
    assert dense.metadata["physics"] == "physics.py:residual" and dense.metadata["inputs"] == ",".join(INPUTS)
    physics = load_physics(str(user_run.folder / "physics.py") + ":residual")
    data = load_user_dataset(user_run.folder / "data.csv", list(INPUTS), list(TARGETS), 0, physics)
    dense_rms = evaluate(dense.network.module, data).residual_rms
    for method in ("structured", "magnitude"):
        history = json.loads((user_run.out / f"prune-{method}" / "history.json").read_text())
        stages = history["stages"]
        assert [s["stage"] for s in stages] == [0, 1, 2]  # quick: two rounds
        assert all(isinstance(s["val_residual_rms"], float) and math.isfinite(s["val_residual_rms"]) for s in stages)
        assert stages[0]["val_residual_rms"] == pytest.approx(dense_rms, rel=1e-5)  # the user's residual, not another
        assert history["achieved"]["params_reduction" if method == "structured" else "nonzero_reduction"] == \
            pytest.approx(0.685, abs=0.01)
    structured = load_checkpoint(user_run.out / "prune-structured" / "structured.safetensors").network
    assert all(w < d for w, d in zip(structured.architecture.widths, architecture.widths))
    assert structured.architecture.group_names == architecture.group_names


@pytest.mark.slow
def test_the_stage_records_hold_the_data_and_physics_so_a_resume_notices_a_change(user_run):
    for method in ("structured", "magnitude"):
        record = json.loads((user_run.out / "stages" / f"prune-{method}.json").read_text())
        assert record["inputs"]["data.csv"] == sha256_of(user_run.folder / "data.csv")
        assert record["inputs"]["physics.py"] == sha256_of(user_run.folder / "physics.py")
        assert record["params"]["model"]["physics"] == "physics.py:residual"
        assert record["params"]["model"]["model"] == "model.pt2"
        assert record["params"]["model"]["inputs"] == list(INPUTS)


@pytest.mark.slow
def test_a_second_run_reuses_every_stage_and_gates_again(user_run):
    assert user_run.again.returncode == user_run.first.returncode, user_run.again.stderr[-3000:]
    reused = [line for line in user_run.again.stdout.splitlines() if "up to date, reused" in line]
    assert [line.split()[1].rstrip(":") for line in reused] == \
        ["import", "prune-structured", "prune-magnitude", "export", "bench", "report"]


@pytest.mark.slow
def test_model_flags_without_a_model_and_a_model_without_its_data_are_one_line(tmp_path):
    assert_clean_error(run_cli("run", "--physics", "p.py:residual", "--out", str(tmp_path / "o")), "--physics",
                       "only apply with --model")
    assert_clean_error(run_cli("run", "--model", "m.pt", "--out", str(tmp_path / "o")), "--data FILE")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_model_that_does_not_fit_the_data_is_refused_before_any_stage(tmp_path):
    problem = write_problem(tmp_path, rows=200, fit_steps=0)
    result = run_cli("run", "--model", str(problem.model), "--data", str(problem.data), "--inputs", "x0,x1",
                     "--targets", "u0", "--out", str(tmp_path / "o"))
    assert_clean_error(result, "7 inputs to 3 outputs", "2 inputs and 1 targets")
    assert not (tmp_path / "o").exists()
