"""Reading real pytest-benchmark JSON (from a tiny benchmark session run here), manifests and histories."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch

from spinn_export.budget import Target
from spinn_export.checkpoint import save_checkpoint
from spinn_export.data import builtin_dataset
from spinn_export.errors import UserError
from spinn_export.export import parse_formats
from spinn_export.manifest import export_checkpoints
from spinn_export.model import build_model
from spinn_export.prune import PruneConfig, prune
from spinn_export.results import load_history, load_manifest, load_results, speedups
from spinn_export.spec import MLPSpec

# A tiny benchmark session in the suite's format: real timings of the real (tiny) checkpoints
# named in SPINN_TINY_CHECKPOINTS, the extra_info keys of docs/ARCHITECTURE.md, and, when
# SPINN_TINY_PAIRED is set, the top-level "spinn" key measured with spinn_export.paired/machine.
BENCH_MODULE = """
import os

import pytest
import torch

from spinn_export.checkpoint import load_checkpoint
from spinn_export.model import count_nonzero

torch.set_num_threads(1)
CHECKPOINTS = [load_checkpoint(p) for p in os.environ["SPINN_TINY_CHECKPOINTS"].split(os.pathsep)]
NAMES = [os.path.basename(p).split(".")[0] for p in os.environ["SPINN_TINY_CHECKPOINTS"].split(os.pathsep)]
BATCHES = [int(b) for b in os.environ["SPINN_TINY_BATCHES"].split(",")]


def runner(backend, model, batch):
    x = torch.randn(batch, model[0].in_features)
    model = torch.jit.trace(model, x) if backend == "torchscript-cpu" else model
    return lambda: model(x)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("index", range(len(CHECKPOINTS)))
def test_tiny(benchmark, index, batch):
    backend, checkpoint = os.environ["SPINN_TINY_BACKEND"], CHECKPOINTS[index]
    spec, model = checkpoint.spec, checkpoint.model.eval()
    benchmark.group = f"{backend} batch={batch}"
    with torch.inference_mode():
        benchmark.pedantic(runner(backend, model, batch), rounds=30, iterations=5, warmup_rounds=3)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(
        variant=checkpoint.variant, model=NAMES[index], backend=backend, device="cpu", batch=batch,
        params=spec.params, nonzero_params=count_nonzero(model), flops_per_sample=spec.flops_per_sample,
        gflops=spec.flops_per_sample * batch / median / 1e9, widths=list(spec.widths), provider="torch",
        threads=torch.get_num_threads(), device_name="cpu",
    )
"""

CONFTEST = """
import os

import torch

from spinn_export import machine, paired


def pytest_benchmark_update_machine_info(config, machine_info):
    if os.environ.get("SPINN_TINY_PAIRED"):
        machine_info.update(machine.machine_info())


def pytest_benchmark_update_json(config, benchmarks, output_json):
    if not os.environ.get("SPINN_TINY_PAIRED"):
        return
    import bench_tiny as tiny

    dense = next(c for c in tiny.CHECKPOINTS if c.variant == "dense")
    pairs, flop_ratio = {}, {}
    with torch.inference_mode():
        for checkpoint in tiny.CHECKPOINTS:
            if checkpoint.variant == "dense":
                continue
            flop_ratio[checkpoint.variant] = dense.spec.flops_per_sample / checkpoint.spec.flops_per_sample
            for batch in tiny.BATCHES:
                pairs[(checkpoint.variant, batch)] = (tiny.runner("eager-cpu", dense.model.eval(), batch),
                                                      tiny.runner("eager-cpu", checkpoint.model.eval(), batch))
        settings = paired.PairedConfig(processes=1, cycles=6, block_seconds=0.004, bootstrap=500)
        ratios = paired.run_pairs(pairs, settings)
    rows = []
    for (variant, batch), cycle_ratios in ratios.items():
        median, low, high = paired.summarize([cycle_ratios], settings.bootstrap)
        rows.append(dict(backend="eager-cpu", batch=batch, variant=variant, baseline="dense", speedup_median=median,
                         ci_low=low, ci_high=high, processes=1, blocks_per_process=4 * settings.cycles,
                         flop_ratio=flop_ratio[variant]))
    output_json["spinn"] = {"ceiling_gflops": machine.gemm_ceiling(1, size=256, seconds=0.2), "paired": rows}
"""

DENSE = MLPSpec(18, (64, 64), 2)
TARGET = 0.6  # structured pruning to 40 % of the parameters: hidden widths about 64 -> 34


@dataclass(frozen=True)
class Pipeline:
    """Real files of a tiny run: pruning histories, an exporter manifest and benchmark JSON."""

    structured_dir: Path
    magnitude_dir: Path
    manifest: Path
    bench_json: Path
    directory: Path


def run_tiny_benchmarks(directory: Path, name: str, checkpoints: list[Path], backend: str = "eager-cpu",
                        batches: str = "1,256", paired: bool = True) -> Path:
    """Run the tiny module under pytest-benchmark and return its --benchmark-json file (cached by name)."""
    out = directory / f"{name}.json"
    if out.exists():
        return out
    (directory / "bench_tiny.py").write_text(BENCH_MODULE)
    (directory / "conftest.py").write_text(CONFTEST)
    env = {**os.environ, "SPINN_TINY_BACKEND": backend, "SPINN_TINY_BATCHES": batches,
           "SPINN_TINY_CHECKPOINTS": os.pathsep.join(map(str, checkpoints))}
    env.pop("SPINN_TINY_PAIRED", None)
    env |= {"SPINN_TINY_PAIRED": "1"} if paired else {}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "--rootdir",
         str(directory), "bench_tiny.py", f"--benchmark-json={out}"],
        capture_output=True, text=True, cwd=directory, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def build_pipeline(directory: Path) -> Pipeline:
    """dense -> structured and magnitude pruning (no fine-tuning) -> ONNX export of dense and structured
    -> benchmarks of all three (cached on disk: test modules that import the fixture share it)."""
    pipeline = Pipeline(directory / "prune-structured", directory / "prune-magnitude",
                        directory / "artifacts" / "manifest.json", directory / "eager.json", directory)
    if pipeline.bench_json.exists():
        return pipeline
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    dense_model = build_model(DENSE)
    dense = save_checkpoint(directory / "dense.safetensors", dense_model, DENSE, {"variant": "dense"})
    data = builtin_dataset(seed=0, n_train=256, n_val=128, n_test=16)
    for method, out in (("structured", pipeline.structured_dir), ("magnitude", pipeline.magnitude_dir)):
        config = PruneConfig(Target.params(TARGET), method=method, rounds=2, finetune_epochs=0, calibration_samples=64)
        prune(dense_model, DENSE, data, config, out, metadata={"variant": "dense"}, progress=False)
    checkpoints = [dense, pipeline.structured_dir / "structured.safetensors",
                   pipeline.magnitude_dir / "magnitude.safetensors"]
    export_checkpoints(checkpoints[:2], pipeline.manifest.parent, parse_formats("onnx"))  # magnitude: no file
    run_tiny_benchmarks(directory, "eager", checkpoints)
    return pipeline


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    return build_pipeline(tmp_path_factory.getbasetemp() / "tiny_pipeline")


@pytest.fixture(scope="session")
def bench_json(pipeline: Pipeline) -> Path:
    return pipeline.bench_json


def test_benchmarks_are_read_with_their_extra_info_and_statistics(bench_json: Path) -> None:
    raw = json.loads(bench_json.read_text())
    results = load_results([bench_json])
    bench = results.benchmarks
    assert len(bench) == len(raw["benchmarks"]) == 6
    assert set(bench["machine"]) == {raw["machine_info"]["node"]}
    assert list(bench["variant"]) == ["dense", "magnitude", "structured"] * 2  # by batch, then dense first
    for entry in raw["benchmarks"]:
        info, stats = entry["extra_info"], entry["stats"]
        row = bench[(bench["variant"] == info["variant"]) & (bench["batch"] == info["batch"])].iloc[0]
        assert row["median_s"] == stats["median"] and row["iqr_s"] == stats["iqr"]
        assert row["p95_s"] == pytest.approx(pd.Series(stats["data"]).quantile(0.95))
        assert row["samples_per_s"] == pytest.approx(info["batch"] / stats["median"])
        assert row["gflops"] == pytest.approx(info["gflops"])
        assert row["widths"] == ",".join(map(str, info["widths"]))
    run = results.runs.iloc[0]
    assert run["ceiling_gflops"] == raw["spinn"]["ceiling_gflops"] > 0
    assert f"torch {torch.__version__}" in run["versions"] and run["cpu_model"] == raw["machine_info"]["cpu_model"]
    assert len(results.paired) == len(raw["spinn"]["paired"]) == 4


def test_speedups_are_paired_where_measured_beside_the_medians_and_the_flop_ideal(pipeline: Pipeline) -> None:
    results = load_results([pipeline.bench_json])
    table = speedups(results).set_index(["variant", "batch"])
    bench = results.benchmarks.set_index(["variant", "batch"])
    assert sorted(table.index) == [("magnitude", 1), ("magnitude", 256), ("structured", 1), ("structured", 256)]
    for pair in results.paired.itertuples():
        row = table.loc[(pair.variant, pair.batch)]
        assert row["source"] == "paired" and row["speedup"] == pair.speedup_median
        assert row["ci_low"] <= row["speedup"] <= row["ci_high"]
        assert row["speedup_medians"] == pytest.approx(bench.loc[("dense", pair.batch), "median_s"]
                                                       / bench.loc[(pair.variant, pair.batch), "median_s"])
    structured = load_history(pipeline.structured_dir).stages
    assert table.loc[("structured", 256), "flop_ratio"] == pytest.approx(
        structured["flops_per_sample"].iloc[0] / structured["flops_per_sample"].iloc[-1])
    assert table.loc[("magnitude", 256), "flop_ratio"] == 1.0  # zeros are still multiplied


def test_complementary_runs_of_one_machine_merge_and_repeated_runs_stay_apart(pipeline: Pipeline) -> None:
    checkpoints = [pipeline.directory / "dense.safetensors", pipeline.structured_dir / "structured.safetensors"]
    traced = run_tiny_benchmarks(pipeline.directory, "traced", checkpoints, backend="torchscript-cpu",
                                 batches="256", paired=False)
    merged = load_results([pipeline.bench_json, traced])
    node = json.loads(pipeline.bench_json.read_text())["machine_info"]["node"]
    assert set(merged.benchmarks["machine"]) == {node}
    table = speedups(merged)
    assert set(table[table["backend"] == "torchscript-cpu"]["source"]) == {"medians"}
    assert set(table[table["backend"] == "eager-cpu"]["source"]) == {"paired"}

    again = pipeline.directory / "eager_again.json"  # the same measured file under a second name: a repeated run
    shutil.copyfile(pipeline.bench_json, again)
    repeated = load_results([pipeline.bench_json, again])
    assert set(repeated.benchmarks["machine"]) == {f"{node}/eager", f"{node}/eager_again"}
    assert len(speedups(repeated)) == 8

    with pytest.raises(UserError, match="measured twice"):
        load_results([pipeline.bench_json, pipeline.bench_json])


def test_manifest_and_histories_are_read_from_the_real_files(pipeline: Pipeline) -> None:
    manifest = load_manifest(pipeline.manifest.parent)
    assert sorted(manifest.artifacts["model"]) == ["dense", "structured"]
    assert (manifest.artifacts["format"] == "onnx").all() and manifest.artifacts["parity_passed"].all()
    for row in manifest.artifacts.itertuples():
        assert row.bytes == (pipeline.manifest.parent / row.file).stat().st_size
    assert manifest.versions["torch"] == torch.__version__
    for method, directory in (("structured", pipeline.structured_dir), ("magnitude", pipeline.magnitude_dir)):
        history = load_history(directory)
        assert history.method == method and list(history.stages["stage"]) == [0, 1, 2]
        assert history.stages["params"].iloc[0] == DENSE.params and history.stages["widths"].iloc[0] == "64,64"


@pytest.mark.parametrize("content, needle", [
    (None, "does not exist"),
    ("{not json", "cannot read"),
    ('{"benchmarks": []}', "holds no benchmarks"),
])
def test_unusable_results_files_are_user_errors(tmp_path: Path, content: str | None, needle: str) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=needle):
        load_results([path])


def test_results_from_another_benchmark_suite_are_refused(tmp_path: Path, bench_json: Path) -> None:
    data = json.loads(bench_json.read_text())
    for entry in data["benchmarks"]:
        del entry["extra_info"]["backend"]
    path = tmp_path / "foreign.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="no extra_info backend"):
        load_results([path])


def test_missing_manifest_and_history_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="manifest"):
        load_manifest(tmp_path)
    (tmp_path / "history.json").write_text('{"method": "structured", "stages": []}')
    with pytest.raises(UserError, match="no stages"):
        load_history(tmp_path)
