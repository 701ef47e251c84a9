"""Reading real benchmark JSON (the project's suite run on tiny pruned and exported models), manifests and histories."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from spinn_export.errors import UserError
from spinn_export.report.results import load_history, load_manifest, load_results, speedups

from .conftest import DENSE, Pipeline


@pytest.fixture(scope="session")
def bench_json(pipeline: Pipeline) -> Path:
    return pipeline.ort_json


def test_benchmarks_are_read_with_their_extra_info_and_statistics(bench_json: Path) -> None:
    raw = json.loads(bench_json.read_text())
    latencies = [entry for entry in raw["benchmarks"] if "check" not in entry["extra_info"]]
    results = load_results([bench_json])
    bench = results.benchmarks
    assert len(bench) == len(latencies) == 6
    assert set(bench["machine"]) == {raw["machine_info"]["node"]}
    assert list(bench["variant"]) == ["dense", "magnitude-masked", "structured"] * 2  # by batch, then dense first
    for entry in latencies:
        info, stats = entry["extra_info"], entry["stats"]
        row = bench[(bench["variant"] == info["variant"]) & (bench["batch"] == info["batch"])].iloc[0]
        assert row["median_s"] == stats["median"] and row["iqr_s"] == stats["iqr"]
        assert row["p95_s"] == pytest.approx(pd.Series(stats["data"]).quantile(0.95))
        assert row["samples_per_s"] == pytest.approx(info["batch"] / stats["median"])
        assert row["gflops"] == pytest.approx(info["gflops"])
        assert row["widths"] == ",".join(map(str, info["widths"])) and row["model"] == info["model"]
    run = results.runs.iloc[0]
    ceilings = results.ceilings.set_index(["device", "precision"])
    assert ceilings.loc[("cpu", "fp32"), "gflops"] == raw["spinn"]["ceilings"]["cpu"]["fp32"]["gflops"] > 0
    assert f"torch {torch.__version__}" in run["versions"] and run["cpu_model"] == raw["machine_info"]["cpu_model"]
    assert len(results.paired) == len(raw["spinn"]["paired"]) > 0


def test_timeit_cross_checks_are_read_apart_from_the_latencies(bench_json: Path) -> None:
    raw = json.loads(bench_json.read_text())
    checks = load_results([bench_json]).checks
    assert len(checks) == len(raw["benchmarks"]) - 6 == 4  # dense and structured (the paired variant) at both batches
    assert set(checks["variant"]) == {"dense", "structured"}
    assert set(checks["check"]) == {"timeit"} and set(checks["backend"]) == {"ort-cpu"}
    assert checks["ratio"].to_numpy() == pytest.approx((checks["median_s"] / checks["reference_median_s"]).to_numpy())


def test_every_speedup_is_paired_abba_preferred_with_the_flop_ideal(pipeline: Pipeline) -> None:
    results = load_results([pipeline.ort_json])
    table = speedups(results).set_index(["variant", "batch"])
    assert sorted(table.index) == [("magnitude-masked", 1), ("magnitude-masked", 256),
                                   ("structured", 1), ("structured", 256)]
    paired = results.paired.set_index(["variant", "batch", "method"])
    assert set(results.paired["method"]) == {"abba", "interleaved"}  # --spinn-paired=ort-cpu adds ABBA to the rounds
    for (variant, batch), row in table.iterrows():
        method = "abba" if (variant, batch, "abba") in paired.index else "interleaved"
        assert row["source"] == method and row["speedup"] == paired.loc[(variant, batch, method), "speedup_median"]
        assert row["ci_low"] <= row["speedup"] <= row["ci_high"]
    assert set(table.xs("structured")["source"]) == {"abba"}  # the default --paired-variants
    assert set(table.xs("magnitude-masked")["source"]) == {"interleaved"}
    structured = load_history(pipeline.structured_dir).stages
    assert table.loc[("structured", 256), "flop_ratio"] == pytest.approx(
        structured["flops_per_sample"].iloc[0] / structured["flops_per_sample"].iloc[-1])
    assert table.loc[("magnitude-masked", 256), "flop_ratio"] == 1.0  # zeros are still multiplied


def test_a_ratio_of_medians_is_never_a_speedup(pipeline: Pipeline, tmp_path: Path) -> None:
    data = json.loads(pipeline.eager_json.read_text())
    data["spinn"]["paired"] = []  # results without paired measurements (an old suite's, say)
    path = tmp_path / "unpaired.json"
    path.write_text(json.dumps(data))
    assert speedups(load_results([path])).empty


def test_interleaved_rounds_give_each_latency_case_its_speedup(pipeline: Pipeline) -> None:
    raw = json.loads(pipeline.eager_json.read_text())
    rounds = {(p["variant"], p["batch"]): p for p in raw["spinn"]["paired"]}
    for entry in raw["benchmarks"]:
        info = entry["extra_info"]
        if info["variant"] == "dense":
            assert "speedup" not in info
            continue
        pair = rounds[(info["variant"], info["batch"])]
        assert pair["method"] == "interleaved" and info["speedup_processes"] == pair["processes"]
        if info["variant"] == "structured":  # --paired-variants: pooled with fresh processes' rounds, each thinned
            assert pair["processes"] == 3 and pair["blocks_per_process"] <= entry["stats"]["rounds"]
        else:  # the matrix's own process: every round counts
            assert pair["processes"] == 1 and pair["blocks_per_process"] == entry["stats"]["rounds"]
        assert info["speedup"] == pair["speedup_median"] and info["speedup_ci"] == [pair["ci_low"], pair["ci_high"]]


def test_complementary_runs_of_one_machine_merge_and_repeated_runs_stay_apart(pipeline: Pipeline) -> None:
    merged = load_results([pipeline.ort_json, pipeline.eager_json])
    node = json.loads(pipeline.ort_json.read_text())["machine_info"]["node"]
    assert set(merged.benchmarks["machine"]) == {node}
    table = speedups(merged)
    assert set(table[table["backend"] == "eager-cpu"]["source"]) == {"interleaved"}
    assert "abba" in set(table[table["backend"] == "ort-cpu"]["source"])

    again = pipeline.directory / "ort_again.json"  # the same measured file under a second name: a repeated run
    shutil.copyfile(pipeline.ort_json, again)
    repeated = load_results([pipeline.ort_json, again])
    assert set(repeated.benchmarks["machine"]) == {f"{node}/ort", f"{node}/ort_again"}
    assert len(speedups(repeated)) == 8

    with pytest.raises(UserError, match="measured twice"):
        load_results([pipeline.ort_json, pipeline.ort_json])


def test_manifest_and_histories_are_read_from_the_real_files(pipeline: Pipeline) -> None:
    manifest = load_manifest(pipeline.manifest.parent)
    assert sorted(manifest.artifacts["model"]) == ["dense", "magnitude", "structured"]
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
