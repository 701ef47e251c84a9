"""`spinn-export bench` and `spinn-export backends`: the packaged suite from any folder, plug-ins found through
entry points, and every user mistake one line with nothing written."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import REPO, Pipeline, assert_clean_error, plugin_environment, run_bench, run_cli


def _toy_environment(tmp_path: Path) -> dict[str, str]:
    """A temporary dist-info on the path registers the toy backends (and one broken entry) with no edit here."""
    return plugin_environment(tmp_path / "site", "toy_backend", "[spinn_export.backends]\ntoy-cpu = toy_backend:TOY\n"
                              "wrong-cpu = toy_backend:WRONG\nbroken-cpu = toy_backend_missing:NOTHING\n")


def test_bench_from_another_folder_writes_json_with_paired_speedups(pipeline: Pipeline, tmp_path: Path) -> None:
    result = run_cli("bench", str(pipeline.manifest.parent), "--backends", "ort-cpu", "--batches", "1,256",
                     "--variants", "dense,structured", "--quick", "--threads", "1", "--json", "out.json",
                     "--log", "run.log", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (tmp_path / "run.log").read_text()
    assert "benchmark 'ort-cpu batch=256'" in log and "Name (time in" in log  # pytest-benchmark's tables: the log
    assert "Name (time in" not in result.stdout and "[1/" in result.stdout  # the console: a line per case
    assert "test_latency[ort-cpu-b256-structured]: passed" in result.stdout
    data = json.loads((tmp_path / "out.json").read_text())
    latencies = [b for b in data["benchmarks"] if "check" not in b["extra_info"]]
    assert {(b["extra_info"]["variant"], b["extra_info"]["batch"]) for b in latencies} == {
        (v, n) for v in ("dense", "structured") for n in (1, 256)}
    assert {b["extra_info"]["artifact"] for b in latencies} == {"dense.onnx", "structured.onnx"}
    paired = data["spinn"]["paired"]
    assert sorted((p["method"], p["batch"]) for p in paired) == [("abba", 1), ("abba", 256), ("interleaved", 1),
                                                                  ("interleaved", 256)]
    assert {(p["backend"], p["variant"]) for p in paired} == {("ort-cpu", "structured")}
    assert all(p["ci_low"] <= p["speedup_median"] <= p["ci_high"] for p in paired)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "run.log"]  # nothing else in the user's folder


def test_a_backend_from_another_package_is_listed_and_benchmarked(pipeline: Pipeline, tmp_path: Path) -> None:
    env = _toy_environment(tmp_path)
    listed = {row["name"]: row for row in json.loads(run_cli("backends", "--json", env=env).stdout)}
    assert listed["toy-cpu"]["available"] and listed["toy-cpu"]["format"] == "checkpoint"
    assert not listed["broken-cpu"]["available"] and "toy_backend_missing" in listed["broken-cpu"]["reason"]
    assert listed["ort-cpu"]["available"] and listed["eager-cuda"]["device"] == "cuda"
    assert (listed["ort-cpu"]["runtime"], listed["toy-cpu"]["runtime"]) == ("onnxruntime", "")  # "": unknown, own
    result = run_cli("bench", str(pipeline.manifest.parent), "--backends", "toy-cpu,eager-cpu", "--batches", "4",
                     "--quick", "--threads", "1", "--paired", "toy-cpu", "--json", "toy.json", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((tmp_path / "toy.json").read_text())
    toy = [b["extra_info"] for b in data["benchmarks"] if b["extra_info"]["backend"] == "toy-cpu"]
    assert {info["variant"] for info in toy} == {"dense", "structured"} and {i["provider"] for i in toy} == {"numpy"}
    assert [p["backend"] for p in data["spinn"]["paired"] if p["method"] == "abba"] == ["toy-cpu"]
    assert {p["backend"] for p in data["spinn"]["paired"]} == {"toy-cpu", "eager-cpu"}  # every backend's rounds


def test_a_backend_that_disagrees_with_eager_pytorch_is_never_timed(pipeline: Pipeline, tmp_path: Path) -> None:
    result = run_cli("bench", str(pipeline.manifest.parent), "--backends", "wrong-cpu", "--batches", "4",
                     "--variants", "dense", "--quick", "--paired", "none", "--threads", "1", "--json", "w.json",
                     cwd=tmp_path, env=_toy_environment(tmp_path))
    assert result.returncode == 1
    assert "dense on wrong-cpu: parity failed" in result.stdout
    assert "the benchmark suite failed (pytest exit 1); see its output above; no JSON was written" in result.stderr
    assert not (tmp_path / "w.json").exists() and not list(tmp_path.glob(".w.json*"))


@pytest.mark.parametrize("args, needle", [
    (["--backends", "tensorrt"], "unknown backend 'tensorrt'"),
    (["--batches", "1,x"], "--batches must be comma-separated positive integers"),
    (["--batches", "0"], "--batches must be comma-separated positive integers"),
    (["--variants", "dense,sparse"], "unknown variant(s) sparse"),
    (["--backend-option", "compile-cpu:mode=fastest"], "mode 'fastest' is not one of"),
    (["--json", "."], "is a directory"),
    (["--json", "no/such/dir/out.json"], "does not exist"),
    (["--log", "."], "--log . is a directory"),
    (["--log", "no/such/dir/bench.log"], "does not exist"),
    (["extra"], "unrecognized arguments: extra"),
])
def test_bench_user_errors_are_one_line_and_write_nothing(pipeline: Pipeline, tmp_path: Path, args: list[str],
                                                          needle: str) -> None:
    before = sorted(tmp_path.iterdir())
    result = run_cli("bench", str(pipeline.manifest.parent), *args, cwd=tmp_path)
    assert_clean_error(result, needle)
    assert sorted(tmp_path.iterdir()) == before


def test_a_missing_or_tampered_manifest_is_refused_before_anything_runs(pipeline: Pipeline, tmp_path: Path) -> None:
    assert_clean_error(run_cli("bench", str(tmp_path / "nothing"), cwd=tmp_path), "no manifest", "spinn-export export")
    copy = tmp_path / "artifacts"
    shutil.copytree(pipeline.manifest.parent, copy)
    (copy / "structured.onnx").write_bytes(b"tampered")
    assert_clean_error(run_cli("bench", str(copy), "--json", "out.json", cwd=tmp_path), "sha256 mismatch")
    (copy / "manifest.json").write_text("{not json")
    assert_clean_error(run_cli("bench", str(copy), cwd=tmp_path), "not a valid manifest")
    assert not (tmp_path / "out.json").exists()


def test_autosave_then_compare_from_the_checkout(pipeline: Pipeline, tmp_path: Path) -> None:
    storage = "--benchmark-storage=file://./store"  # pytest-benchmark wants its storage below the working folder
    args = (str(REPO / "bench" / "test_suite.py"), "-k", "latency", f"--spinn-artifacts={pipeline.manifest.parent}",
            "--spinn-backends=ort-cpu", "--spinn-batches=8", "--spinn-variants=dense", "--spinn-paired=none",
            "--spinn-quick", "--spinn-threads=1", storage)
    saved = run_bench(*args, "--benchmark-autosave", cwd=tmp_path)
    assert saved.returncode == 0, saved.stdout[-3000:]
    assert len(list(tmp_path.rglob("0001_*.json"))) == 1
    compared = run_bench(*args, "--benchmark-compare", cwd=tmp_path)
    assert compared.returncode == 0, compared.stdout[-3000:]
    assert "0001" in compared.stdout and "test_latency[ort-cpu-b8-dense]" in compared.stdout


@pytest.mark.slow
def test_one_models_latency_across_backends_needs_no_pruned_model(small_checkpoint: Path, tmp_path: Path) -> None:
    """Defaults never fail a run they do not apply to: a folder with only a dense model is benchmarked (no paired
    variant is asked for where there is none)."""
    from spinn_export.export.exporter import export_checkpoints
    from spinn_export.export.formats import parse_formats

    export_checkpoints([small_checkpoint], tmp_path / "artifacts", parse_formats("onnx"))
    result = run_cli("bench", str(tmp_path / "artifacts"), "--backends", "ort-cpu,eager-cpu", "--batches", "4",
                     "--no-memory", "--json", "out.json", "--", "--benchmark-max-time=0.01", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    benchmarks = json.loads((tmp_path / "out.json").read_text())["benchmarks"]
    assert {b["extra_info"]["backend"] for b in benchmarks if "backend" in b["extra_info"]} >= {"ort-cpu", "eager-cpu"}
