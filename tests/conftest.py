from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from spinn_export.model.checkpoint import save_checkpoint
from spinn_export.model.mlp import build_model
from spinn_export.model.spec import MLPSpec


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> CliResult:
    """The real console entry point in a fresh interpreter, as a user runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "spinn_export", *args],
        capture_output=True, text=True, cwd=cwd, timeout=600, env=env, check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


REPO = Path(__file__).resolve().parents[1]


def run_bench(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """The project's benchmark suite (bench/) in a fresh interpreter, as from the checkout, quietly."""
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=600, check=False)


def assert_clean_error(result: CliResult, *needles: str) -> None:
    """A user error: non-zero exit, exactly one line on stderr, no traceback, naming the problem."""
    assert result.returncode != 0, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])


def linear_layers(model: nn.Module) -> list[nn.Module]:
    """A plain MLP's layers (`build_model`'s `linear0`, `linear1`, ...), each holding its `weight` and `bias`."""
    return [module for name, module in model.named_children() if name.startswith("linear")]


def seeded_model(spec: MLPSpec, seed: int = 0) -> nn.Module:
    """The plain MLP of `spec` with the weights torch's seed `seed` draws."""
    torch.manual_seed(seed)
    return build_model(spec)


@pytest.fixture
def model(small_spec: MLPSpec) -> nn.Module:
    """`small_spec`'s model, seeded, in eval mode."""
    return seeded_model(small_spec).eval()


@pytest.fixture
def small_spec() -> MLPSpec:
    return MLPSpec(in_features=18, widths=(32, 24, 16), out_features=2, activation="tanh")


@pytest.fixture
def small_checkpoint(tmp_path: Path, small_spec: MLPSpec) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "small.safetensors"
    save_checkpoint(path, build_model(small_spec), small_spec, {"variant": "dense"})
    return path
