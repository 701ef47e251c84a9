"""The outside timer (`bench/outside_timer.py`, `bench.outside`): the verdict and benchmark_app's output on synthetic
figures; the files it times picked from a real run; a real run of it, whose ratios are only checked to exist (a
measured ratio is never asserted); the report shows its verdict."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from spinn_export.bench.options import manifest_models
from spinn_export.bench.outside import benchmark_app, benchmark_app_median, deployment_of, verdict
from spinn_export.errors import UserError
from spinn_export.report.writer import build_report

from .conftest import REPO, Pipeline


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("outside_timer", REPO / "bench" / "outside_timer.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_the_verdict_is_the_median_ratio_within_15_percent_of_the_suites() -> None:
    agree = verdict([11.0, 12.0, 13.0], 10.5)
    assert agree.ratio == 12.0 and agree.difference == pytest.approx(12.0 / 10.5 - 1) and agree.agree
    assert agree.text == "agree within 15%"
    apart = verdict([16.0, 22.0, 19.0], 10.5)
    assert not apart.agree and apart.text == "do not agree"


def test_benchmark_apps_median_is_read_from_its_output() -> None:
    output = "[ INFO ] Latency:\n[ INFO ]    Median:        3.09 ms\n[ INFO ]    Average:       3.22 ms\n"
    assert benchmark_app_median(output) == pytest.approx(3.09e-3)
    assert benchmark_app_median("[ INFO ]    Median:        11.63 us\n") == pytest.approx(11.63e-6)
    with pytest.raises(UserError, match="no median latency"):
        benchmark_app_median("[ ERROR ] something else\n")


def _results(pipeline: Pipeline, **change: Any) -> dict[str, Any]:
    results = json.loads(pipeline.ort_json.read_text())
    for entry in results["spinn"]["fastest"]:
        entry.update(change)
    return results


def test_the_files_timed_are_the_fastest_deployments_and_dense_float32s(pipeline: Pipeline) -> None:
    refs = manifest_models(pipeline.manifest.parent)
    results = _results(pipeline)
    chosen = deployment_of(results["spinn"]["fastest"], refs, None)
    entry = max(results["spinn"]["fastest"], key=lambda e: e["batch"])
    assert (chosen.batch, chosen.variant, chosen.backend) == (256, entry["variant"], "ort-cpu")
    assert chosen.file == refs[entry["variant"]].file("onnx") and chosen.dense_file.name == "dense.onnx"
    assert chosen.suite_speedup == entry["speedup_vs_dense_fp32"] and chosen.in_features == 18
    with pytest.raises(UserError, match="no fastest deployment at batch 64"):
        deployment_of(results["spinn"]["fastest"], refs, 64)
    with pytest.raises(UserError, match="times ort-cpu and openvino-cpu deployments only"):
        deployment_of(_results(pipeline, backend="eager-cpu")["spinn"]["fastest"], refs, None)
    with pytest.raises(UserError, match="no fastest deployment"):
        deployment_of([], refs, None)


def test_a_real_run_times_both_sides_and_the_report_shows_the_verdict(pipeline: Pipeline, tmp_path: Path) -> None:
    out = tmp_path / "outside.json"
    assert _script().main([str(pipeline.directory), "--results", str(pipeline.ort_json), "--artifacts",
                           str(pipeline.manifest.parent), "--rounds", "2", "--seconds", "0.2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    [(tool, entry)] = result["tools"].items()
    assert tool == "onnxruntime loop" and len(entry["ratios"]) == 2 and all(r > 0 for r in entry["ratios"])
    assert entry["verdict"] in ("agree within 15%", "do not agree") and result["agree"] == entry["agree"]
    markdown = build_report([pipeline.ort_json], None, None, tmp_path / "r", outside_timer=out).markdown.read_text()
    assert "## Outside timer" in markdown and entry["verdict"] in markdown


def test_bad_input_is_one_line_and_exit_2(pipeline: Pipeline, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _script().main(["--results", str(tmp_path / "none.json"), "--artifacts", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(UserError, match="not an outside-timer result"):
        build_report([pipeline.ort_json], None, None, tmp_path / "r", outside_timer=pipeline.ort_json)


def test_benchmark_app_runs_with_the_threads_and_stream_asked_for(pipeline: Pipeline) -> None:
    pytest.importorskip("openvino")
    dense = manifest_models(pipeline.manifest.parent)["dense"].file("onnx")
    for hint in ("latency", "none"):
        assert benchmark_app(dense, 16, 18, 1, hint, 1.0) > 0


def test_an_outside_timer_file_of_a_newer_version_is_refused_in_one_line(tmp_path: Path) -> None:
    from spinn_export.report.limits import load_outside_timer

    path = tmp_path / "outside.json"
    path.write_text(json.dumps({"schema": "spinn-export.outside-timer", "version": 3, "kind": "outside-timer"}))
    with pytest.raises(UserError, match="newer than this spinn-export reads"):
        load_outside_timer(path)
    path.write_text(json.dumps({"schema": 1, "kind": "outside-timer", "batch": 8192}))  # the previous release's
    assert load_outside_timer(path)["batch"] == 8192
