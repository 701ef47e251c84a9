from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from spinn_export.export.exporter import export_checkpoints
from spinn_export.export.formats import parse_formats
from spinn_export.model.checkpoint import save_checkpoint
from spinn_export.model.mlp import mlp_network
from spinn_export.model.network import Network
from spinn_export.model.spec import MLPSpec
from spinn_export.prune.config import PruneConfig
from spinn_export.prune.structured import prune
from spinn_export.prune.target import Target
from spinn_export.task.data import builtin_dataset
from spinn_export.task.train import TrainConfig


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


PLUGINS = Path(__file__).parent / "plugins"  # test plug-ins, as other packages would ship them


def plugin_environment(site: Path, name: str, entry_points: str) -> dict[str, str]:
    """A fresh interpreter's environment in which a temporary dist-info `name` (its `entry_points.txt` given) and
    tests/plugins/ are on the path: plug-ins registered as a third-party package would, with no edit to spinn-export."""
    dist = site / f"{name}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(entry_points)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(PLUGINS), os.environ.get("PYTHONPATH", "")])}


def assert_clean_error(result: CliResult, *needles: str) -> None:
    """A user error: non-zero exit, exactly one line on stderr, no traceback, naming the problem."""
    assert result.returncode != 0, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])


def linear_layers(model: nn.Module) -> list[nn.Module]:
    """A plain MLP's layers (`mlp_network`'s `linear0`, `linear1`, ...), each holding its `weight` and `bias`."""
    return [module for name, module in model.named_children() if name.startswith("linear")]


def seeded_network(spec: MLPSpec, seed: int = 0) -> Network:
    """The plain MLP of `spec` with the weights torch's seed `seed` draws (in train mode, as a fresh module is)."""
    torch.manual_seed(seed)
    return mlp_network(spec)


@pytest.fixture
def network(small_spec: MLPSpec) -> Network:
    """`small_spec`'s network, seeded, in eval mode."""
    network = seeded_network(small_spec)
    network.module.eval()
    return network


@pytest.fixture
def small_spec() -> MLPSpec:
    return MLPSpec(in_features=18, widths=(32, 24, 16), out_features=2, activation="tanh")


@pytest.fixture
def small_checkpoint(tmp_path: Path, small_spec: MLPSpec) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "small.safetensors"
    save_checkpoint(path, mlp_network(small_spec), {"variant": "dense"})
    return path


# ------------------------------------------------------------------ the tiny pipeline several modules read

DENSE = MLPSpec(18, (64, 64), 2)
TARGET = 0.6  # structured pruning to 40 % of the parameters: hidden widths 64 -> 37
VARIANTS = "dense,structured,magnitude-masked"


@dataclass(frozen=True)
class Pipeline:
    """Real files of a tiny run: pruning histories, an exporter manifest and the benchmark suite's JSON.

    ort_json: ort-cpu with paired speedups; eager_json: eager-cpu without (a second run, same machine).
    """

    directory: Path
    structured_dir: Path
    magnitude_dir: Path
    manifest: Path
    ort_json: Path
    eager_json: Path


def run_suite(out: Path, artifacts: Path, backends: str, paired: str) -> Path:
    """The project's own pytest-benchmark suite (bench/) on the tiny artifacts, quick settings."""
    proc = run_bench("bench",
                     f"--spinn-artifacts={artifacts}", f"--spinn-backends={backends}", f"--spinn-variants={VARIANTS}",
                     "--spinn-batches=1,256", "--spinn-quick", f"--spinn-paired={paired}", "--spinn-threads=1",
                     f"--benchmark-json={out}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def build_pipeline(directory: Path) -> Pipeline:
    """dense -> structured and magnitude pruning (no fine-tuning) -> ONNX export -> the benchmark suite.

    Cached on disk: the test modules that import the `pipeline` fixture share one build.
    """
    pipeline = Pipeline(directory, directory / "prune-structured", directory / "prune-magnitude",
                        directory / "artifacts" / "manifest.json", directory / "ort.json", directory / "eager.json")
    if pipeline.eager_json.exists():
        return pipeline
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    dense_network = mlp_network(DENSE)
    dense = save_checkpoint(directory / "dense.safetensors", dense_network, {"variant": "dense"})
    data = builtin_dataset(seed=0, n_train=256, n_val=128, n_test=16)
    for method, out in (("structured", pipeline.structured_dir), ("magnitude", pipeline.magnitude_dir)):
        config = PruneConfig(Target.params(TARGET), method=method, rounds=2, finetune=TrainConfig(epochs=0),
                             calibration_samples=64)
        prune(dense_network, data, config, out, metadata={"variant": "dense"}, progress=False)
    checkpoints = [dense, pipeline.structured_dir / "structured.safetensors",
                   pipeline.magnitude_dir / "magnitude.safetensors"]
    export_checkpoints(checkpoints, pipeline.manifest.parent, parse_formats("onnx"))
    run_suite(pipeline.ort_json, pipeline.manifest.parent, "ort-cpu", paired="ort-cpu")
    run_suite(pipeline.eager_json, pipeline.manifest.parent, "eager-cpu", paired="none")
    return pipeline


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    return build_pipeline(tmp_path_factory.getbasetemp() / "tiny_pipeline")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that reads the tiny pipeline is slow: its first use prunes, exports and runs the suite twice.

    Marked here, by the fixture a test asks for, so a new test of the pipeline's files joins the slow lane by itself.
    """
    for item in items:
        if "pipeline" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)

