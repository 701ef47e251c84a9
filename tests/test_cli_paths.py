"""Every path argument of every command, input or output, that cannot be used: exit 2, one line naming it, no
traceback, and nothing written (checked before any expensive work)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from spinn_export.cli import main
from spinn_export.model.checkpoint import save_checkpoint
from spinn_export.model.mlp import mlp_network
from spinn_export.model.spec import MLPSpec

from .conftest import REPO, assert_clean_error, run_cli

SPEC = MLPSpec(3, (8, 8), 1)
PHYSICS = ("import torch\n\n\ndef residual(model, inputs):\n"
           "    out = model(inputs)\n"
           "    return torch.autograd.grad(out.sum(), inputs, create_graph=True)[0][:, 0] - 1.0\n")


@dataclass(frozen=True)
class Workspace:
    """Good inputs (so that only the path under test is wrong), bad ones, and places outputs cannot go."""

    root: Path
    locked: Path  # a directory this process may not write in

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    @property
    def data(self) -> list[str]:
        return ["--data", str(self / "d.csv"), "--inputs", "a,b,c", "--targets", "y"]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({name: rng.uniform(-1, 1, 64) for name in "abc"})
    frame["y"] = frame.a + frame.b * frame.c
    frame.to_csv(tmp_path / "d.csv", index=False)
    torch.manual_seed(0)
    network = mlp_network(SPEC)
    save_checkpoint(tmp_path / "ck.safetensors", network, {"variant": "dense"})
    torch.save(network.module.state_dict(), tmp_path / "sd.pt")
    (tmp_path / "physics.py").write_text(PHYSICS)
    shutil.copy(REPO / "reports" / "reference" / "bench.json", tmp_path / "bench.json")
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("not a directory")
    for name in ("garbage.safetensors", "garbage.pt", "garbage.parquet", "garbage.json"):
        (tmp_path / name).write_bytes(b"\x00\x13garbage{" * 20)
    (tmp_path / "garbage.py").write_text("def residual(model, inputs)\n")
    (tmp_path / "garbage.toml").write_text("[tool.spinn_export.gate\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    monkeypatch.chdir(tmp_path)  # anything written to the working directory would show up too
    # root ignores file modes; /proc/1 is a directory nobody but its owner process may write in
    yield Workspace(tmp_path, locked if not os.access(locked, os.W_OK) else Path("/proc/1"))
    locked.chmod(0o755)


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()} | \
        {str(p.relative_to(root)) + "/": 0 for p in root.rglob("*") if p.is_dir()}


Args = Callable[[Workspace], list[str]]
BAD_INPUTS = {"missing": "missing{suffix}", "directory": "adir", "corrupt": "garbage{suffix}"}


def _inputs(command: str, args: Callable[[Workspace, str], list[str]], suffix: str) -> list[tuple[str, Args, str]]:
    cases = []
    for kind, name in BAD_INPUTS.items():
        file = name.format(suffix=suffix)
        cases.append((f"{command}-{kind}", lambda w, f=file: args(w, str(w / f)), file))
    return cases


CASES: list[tuple[str, Args, str]] = [
    *_inputs("info", lambda w, p: ["info", p], ".safetensors"),
    *_inputs("import", lambda w, p: ["import", p, "--out", str(w / "new" / "m.safetensors")], ".pt"),
    *_inputs("train-data", lambda w, p: ["train", "--data", p, "--inputs", "a,b,c", "--targets", "y", "--out",
                                         str(w / "m.safetensors")], ".parquet"),
    *_inputs("train-physics", lambda w, p: ["train", *w.data, "--physics", f"{p}:residual", "--out",
                                            str(w / "m.safetensors")], ".py"),
    *_inputs("prune", lambda w, p: ["prune", p, "--target", "0.5", "--out", str(w / "new")], ".safetensors"),
    *_inputs("prune-data", lambda w, p: ["prune", str(w / "ck.safetensors"), "--target", "0.5", "--data", p,
                                         "--inputs", "a,b,c", "--targets", "y", "--out", str(w / "new")], ".parquet"),
    *_inputs("prune-physics", lambda w, p: ["prune", str(w / "ck.safetensors"), "--target", "0.5", *w.data,
                                            "--physics", f"{p}:residual", "--out", str(w / "new")], ".py"),
    *_inputs("export", lambda w, p: ["export", str(w / "ck.safetensors"), p, "--out", str(w / "new")], ".safetensors"),
    *_inputs("report", lambda w, p: ["report", p, "--out", str(w / "new")], ".json"),
    *_inputs("report-manifest", lambda w, p: ["report", str(w / "bench.json"), "--manifest", p, "--out",
                                              str(w / "new")], ".json"),
    *_inputs("report-history", lambda w, p: ["report", str(w / "bench.json"), "--history", p, "--out",
                                             str(w / "new")], ".json"),
    *_inputs("gate", lambda w, p: ["gate", p, "--min-speedup", "ort-cpu:8192:1"], ".json"),
    *_inputs("gate-baseline", lambda w, p: ["gate", str(w / "bench.json"), "--baseline", p, "--max-drop", "0.5"],
             ".json"),
    *_inputs("gate-policy", lambda w, p: ["gate", str(w / "bench.json"), "--policy", p], ".toml"),
    *_inputs("run-model", lambda w, p: ["run", "--model", p, *w.data, "--out", str(w / "new")], ".pt"),
    *_inputs("run-data", lambda w, p: ["run", "--model", str(w / "sd.pt"), "--data", p, "--inputs", "a,b,c",
                                       "--targets", "y", "--out", str(w / "new")], ".parquet"),
    *_inputs("run-physics", lambda w, p: ["run", "--model", str(w / "sd.pt"), *w.data, "--physics", f"{p}:residual",
                                          "--out", str(w / "new")], ".py"),
    *_inputs("run-policy", lambda w, p: ["run", "--policy", p, "--out", str(w / "new")], ".toml"),
]

# Outputs: a directory that is a file, whose parent is a file, or where we may not write; a file that is a directory.
OUTPUT_COMMANDS: dict[str, tuple[Args, str]] = {
    "import": (lambda w: ["import", str(w / "sd.pt")], "file"),
    "train": (lambda w: ["train", *w.data, "--widths", "4", "--epochs", "1"], "file"),
    "prune": (lambda w: ["prune", str(w / "ck.safetensors"), "--target", "0.5", *w.data], "dir"),
    "export": (lambda w: ["export", str(w / "ck.safetensors")], "dir"),
    "report": (lambda w: ["report", str(w / "bench.json")], "dir"),
    "run": (lambda w: ["run", "--model", str(w / "sd.pt"), *w.data], "dir"),
}
for command, (base, kind) in OUTPUT_COMMANDS.items():
    leaf = "out.safetensors" if kind == "file" else "out"
    targets = {"parent-is-a-file": ("afile/" + leaf, "afile is a file"), "no-permission": (None, "no permission")}
    targets["is-a-directory" if kind == "file" else "is-a-file"] = ("adir", "is a directory") if kind == "file" \
        else ("afile", "is a file, not a directory")
    for name, (relative, needle) in targets.items():
        CASES.append((f"{command}-out-{name}",
                      lambda w, b=base, r=relative, leaf=leaf: [*b(w), "--out", str(w / r if r else w.locked / leaf)],
                      needle))


@pytest.mark.parametrize("args,needle", [pytest.param(a, n, id=i) for i, a, n in CASES])
def test_an_unusable_path_is_one_line_exit_2_and_nothing_is_written(workspace, capsys, args, needle):
    before = _tree(workspace.root)
    code = main(args(workspace))
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (code, captured.err)
    assert needle in lines[0] and "Traceback" not in captured.err, lines[0]
    assert _tree(workspace.root) == before


@pytest.mark.slow
def test_from_a_fresh_process_too(workspace):
    """The console entry point itself: the same one line, no traceback, for an output and an input."""
    assert_clean_error(run_cli("export", str(workspace / "ck.safetensors"), "--out", str(workspace / "afile" / "x")),
                       "afile is a file")
    assert_clean_error(run_cli("run", "--model", str(workspace / "garbage.pt"), *workspace.data), "garbage.pt")
    assert not (workspace / "runs").exists()


def test_each_command_file_registers_the_command_it_is_named_after():
    """Only the chosen command's module is imported, found by its file name; a file registering another name
    would make its command unreachable."""
    from spinn_export.cli import build_parser, command_names

    for command in command_names():
        subparsers = next(a for a in build_parser(command)._actions if a.dest == "command")
        assert list(subparsers.choices) == [command]


@pytest.mark.slow
def test_a_command_imports_only_what_it_uses():
    """`gate` and `report` read JSON and write tables: they start without torch (all commands together took about
    4 s to import before a usage error could even be printed)."""
    script = ("import sys\nfrom spinn_export.cli import main\n"
              "for words in (['gate', '--help'], ['report', '--help'], ['gate', 'results.json', '--bogus']):\n"
              "    try:\n        main(words)\n    except SystemExit:\n        pass\n"
              "print(sorted(m for m in ('torch', 'onnxruntime', 'pytest') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
