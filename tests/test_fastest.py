"""The fastest verified deployment: chosen within the accuracy budget, timed paired against dense float32 on
ort-cpu, stored in the JSON, shown at the top of the report and in the main job's closing summary; a run that
cannot measure it says why."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from spinn_export.bench.fastest import (
    BUDGET,
    PARITY,
    REFERENCE_BACKEND,
    Candidate,
    Verdict,
    decide,
    finalists,
    measure_fastest,
    verdict_for,
    with_bound,
)
from spinn_export.bench.paired import PairedConfig
from spinn_export.bench.variants import ModelRef, Variant, refs_from_manifest
from spinn_export.export.formats import rate_unit
from spinn_export.export.manifest import MANIFEST_NAME
from spinn_export.pipeline.job import RunOutcome, format_summary
from spinn_export.report.gate import GatePolicy, SpeedupRule, run_gate
from spinn_export.report.writer import build_report, summary_table

from .conftest import Pipeline

RECORDS = {"structured.int8.onnx": (True, -0.004), "magnitude.int8.onnx": (False, -0.03),
           "dense.int8.onnx": (None, None)}


@pytest.fixture
def budget_manifest(pipeline: Pipeline, tmp_path: Path) -> Path:
    """The tiny pipeline's manifest plus int8 records: one within the budget, one over it, one without a verdict."""
    data = json.loads(pipeline.manifest.read_text())
    template = next(a for a in data["artifacts"] if a["model"] == "structured")
    for file, (within, delta) in RECORDS.items():
        accuracy = None if delta is None else {"val_r2": 0.9 + delta, "val_r2_delta": delta, "residual_rms": 0.1}
        data["artifacts"].append({**template, "model": file.split(".")[0], "format": "onnx-int8", "precision": "int8",
                                  "file": file, "accuracy": accuracy, "within_budget": within})
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    return tmp_path


def _int8_ref(directory: Path, file: str) -> ModelRef:
    return ModelRef(Variant(file.split(".")[0], "int8"), model=file.split(".")[0], directory=directory,
                    checkpoint="structured.safetensors", files=(("onnx", file),), params=1, nonzero_params=1,
                    flops_per_sample=1, widths=(1,), in_features=18, recorded_error=0.01)


def test_low_precision_files_are_verified_only_by_the_manifests_budget_verdict(budget_manifest: Path) -> None:
    within = verdict_for(_int8_ref(budget_manifest, "structured.int8.onnx"), "onnx")
    assert within == Verdict(True, BUDGET, -0.004)
    over = verdict_for(_int8_ref(budget_manifest, "magnitude.int8.onnx"), "onnx")
    assert not over.verified and "outside" in over.by and over.val_r2_delta == -0.03
    unknown = verdict_for(_int8_ref(budget_manifest, "dense.int8.onnx"), "onnx")
    assert not unknown.verified and "no accuracy recorded" in unknown.by
    missing = verdict_for(_int8_ref(budget_manifest, "structured.int8-static.onnx"), "onnx")
    assert not missing.verified and "not in the manifest" in missing.by
    fp32 = dataclasses.replace(_int8_ref(budget_manifest, "dense.onnx"), variant=Variant("magnitude", sparse=True))
    assert verdict_for(fp32, "checkpoint") == Verdict(True, PARITY)  # CSR and masked: float32 parity, like dense


def test_each_backends_fastest_verified_case_is_a_finalist() -> None:
    verified, over = Verdict(True, PARITY), Verdict(False, "outside the budget", -0.05)
    candidates = [Candidate("ort-cpu", "dense", 3.0, verified), Candidate("ort-cpu", "structured", 2.5, verified),
                  Candidate("openvino-cpu", "structured", 2.0, verified),
                  Candidate("ort-cpu", "structured-int8", 1.0, over),
                  Candidate("eager-cpu", "magnitude-csr", 9.0, verified),
                  Candidate("eager-cpu", "structured", 4.0, verified)]
    assert finalists(candidates) == [candidates[2], candidates[1], candidates[5]]  # never the unverified int8
    assert finalists(candidates, count=1) == [candidates[2]]
    assert finalists([candidates[3]]) == []


def test_within_a_backend_the_paired_speedup_picks_the_finalist_not_the_median() -> None:
    """A quieter minute can give int8-static the lower median while int8's paired speedup over the same dense is
    higher: the paired figure decides."""
    verified = Verdict(True, BUDGET, -0.002)
    static = Candidate("ort-cpu", "structured-int8-static", 0.0245, verified, speedup=3.55)
    dynamic = Candidate("ort-cpu", "structured-int8", 0.0260, verified, speedup=4.73)
    assert finalists([static, dynamic]) == [dynamic]


def _timed(now: list[float], seconds: float):  # a call that advances a fake clock by its own duration
    return lambda: now.__setitem__(0, now[0] + seconds)


def test_the_speedup_is_the_abba_cycles_ratio_over_dense_on_ort_cpu() -> None:
    now = [0.0]
    chosen = Candidate("openvino-cpu", "structured-int8", 0.5, Verdict(True, BUDGET, -0.002))
    result = measure_fastest(8192, chosen, "int8", _timed(now, 1.0), _timed(now, 4.0), PairedConfig(cycles=5),
                             clock=lambda: now[0])
    assert (result.speedup_vs_dense_fp32, result.ci_low, result.ci_high) == (4.0, 4.0, 4.0)
    assert (result.latency_s, result.baseline_latency_s, result.cycles, result.calls_per_block) == (1.0, 4.0, 5, 1)
    assert (result.backend, result.baseline_backend, result.val_r2_delta) == ("openvino-cpu", REFERENCE_BACKEND, -0.002)
    assert set(result.to_dict()) >= {"batch", "variant", "backend", "latency_s", "speedup_vs_dense_fp32", "ci_low",
                                     "ci_high", "val_r2_delta"}
    other = measure_fastest(8192, dataclasses.replace(chosen, backend="ort-cpu", variant="structured"), "fp32",
                            _timed(now, 2.0), _timed(now, 4.0), PairedConfig(cycles=5), clock=lambda: now[0])
    decided = decide([other, result])
    assert decided.variant == "structured-int8" and [f["speedup"] for f in decided.finalists] == [2.0, 4.0]


def test_the_bound_is_the_flops_at_the_precisions_ceiling_and_never_another_precisions() -> None:
    now = [0.0]
    chosen = Candidate("openvino-cpu", "structured-int8-nncf", 0.5, Verdict(True, BUDGET, -0.002))
    result = measure_fastest(8192, chosen, "int8-nncf", _timed(now, 0.004), _timed(now, 0.040), PairedConfig(cycles=3),
                             clock=lambda: now[0])
    bounded = with_bound(result, 2e9, "int8", 1000.0)  # 2 GOP at 1,000 GOP/s: 2 ms, reached in 4 ms
    assert bounded.compute_bound_s == pytest.approx(0.002) and bounded.bound_fraction == pytest.approx(0.5)
    unmeasured = with_bound(result, 2e9, "bf16", None)
    assert unmeasured.compute_bound_s is None and unmeasured.bound_fraction is None
    assert unmeasured.ceiling_precision == "bf16"
    assert [rate_unit(p) for p in ("int8-nncf", "int8", "fp32", "bf16")] == ["GOP/s", "GOP/s", "GFLOP/s", "GFLOP/s"]


def test_the_suite_stores_the_fastest_measured_case_per_batch(pipeline: Pipeline) -> None:
    raw = json.loads(pipeline.ort_json.read_text())
    refs = {ref.name: ref for ref in refs_from_manifest(pipeline.manifest.parent)}
    fastest = {entry["batch"]: entry for entry in raw["spinn"]["fastest"]}
    assert sorted(fastest) == [1, 256] and raw["spinn"]["fastest_skipped"] == []
    for batch, entry in fastest.items():
        paired = {p["variant"]: p["speedup_median"] for p in raw["spinn"]["paired"]
                  if p["batch"] == batch and p["method"] == "interleaved"}
        # one backend, all fp32: one finalist, the variant with the highest paired speedup over its dense (dense: 1)
        assert entry["variant"] == max({"dense": 1.0, **paired}.items(), key=lambda item: item[1])[0]
        assert entry["backend"] == "ort-cpu" and entry["verified_by"] == PARITY and entry["val_r2_delta"] is None
        assert entry["ci_low"] <= entry["speedup_vs_dense_fp32"] <= entry["ci_high"] and entry["latency_s"] > 0
        assert entry["method"] == "abba" and entry["cycles"] == 4  # --spinn-quick's paired cycles
        assert [(f["variant"], f["backend"]) for f in entry["finalists"]] == [(entry["variant"], "ort-cpu")]
        # its distance to the limit: its FLOPs at the fp32 GEMM ceiling this session measured
        flops = refs[entry["variant"]].flops_per_sample * batch
        ceiling = raw["spinn"]["ceilings"]["cpu"]["fp32"]["gflops"]
        assert entry["ceiling_precision"] == "fp32" and entry["ceiling_gflops"] == ceiling
        assert entry["compute_bound_s"] == pytest.approx(flops / (ceiling * 1e9))
        assert entry["bound_fraction"] == pytest.approx(entry["compute_bound_s"] / entry["latency_s"])


def test_without_ort_cpu_the_suite_says_why_and_the_skips_carry_reasons(pipeline: Pipeline) -> None:
    spinn = json.loads(pipeline.eager_json.read_text())["spinn"]
    assert spinn["fastest"] == [] and [s["batch"] for s in spinn["fastest_skipped"]] == [1, 256]
    assert all("ort-cpu is not among the benchmarked backends" in s["reason"] for s in spinn["fastest_skipped"])
    reasons = {s["reason"]: s["cases"] for s in spinn["skipped"]}
    assert any("fastest deployment at batch 256" in r for r in reasons)
    assert any("no timeit cross-check" in r for r in reasons) and any("--paired none" in r for r in reasons)


def test_the_report_and_the_main_jobs_summary_open_with_it(pipeline: Pipeline, tmp_path: Path) -> None:
    entry = max(json.loads(pipeline.ort_json.read_text())["spinn"]["fastest"], key=lambda e: e["batch"])
    sentence = (f"The fastest verified deployment at batch 256 is {entry['variant']} on ort-cpu: "
                f"{entry['latency_s'] * 1e3:.3g} ms, {entry['speedup_vs_dense_fp32']:.2f}× dense float32 on ort-cpu")
    paths = build_report([pipeline.ort_json], pipeline.manifest, None, tmp_path / "report")
    markdown = paths.markdown.read_text()
    summary = markdown[markdown.index("## Summary"):markdown.index("**machines:**")]
    assert sentence in summary and "## Fastest verified deployment" in summary
    at = summary.index("compute bound")  # the fraction reached just before it, the bound in ms just after
    assert f"{entry['bound_fraction']:.0%}" in summary[at - 20:at]
    assert f"{entry['compute_bound_s'] * 1e3:.3g} ms" in summary[at:at + 40]
    assert "GFLOP/s" in summary[at:at + 100]  # an fp32 ceiling; int8's reads in GOP/s
    table = pd.read_csv(paths.csv_dir / "fastest.csv")
    assert list(table["batch"]) == [1, 256] and (table["CI low"] <= table["speedup vs dense fp32 on ort-cpu"]).all()
    assert table.loc[1, "latency ms (median)"] == pytest.approx(entry["latency_s"] * 1e3)

    out = tmp_path / "run"  # the main job's layout: OUT/bench.json, OUT/report/report.html
    (out / "report").mkdir(parents=True)
    shutil.copyfile(pipeline.ort_json, out / "bench.json")
    gate = run_gate(out / "bench.json", GatePolicy(rules=(SpeedupRule("ort-cpu", 256, 0.1),)))
    printed = format_summary(RunOutcome(out / "report" / "report.html", out / "bench.json", gate,
                                        summary_table([out / "bench.json"], None, [])))
    assert sentence in printed and "speedup vs dense fp32 on ort-cpu" in printed

    eager = build_report([pipeline.eager_json], None, None, tmp_path / "eager").markdown.read_text()
    assert "The fastest verified deployment was not measured: ort-cpu is not among the benchmarked backends" in eager
    assert "## Not run" in eager and "no timeit cross-check" in eager
