"""GEMM ceilings per precision: what the hardware offers is detected, not assumed; a case is a fraction of its own
precision's ceiling only; the report reads them, and results written before them still load."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from onnx import numpy_helper

from spinn_export import hardware
from spinn_export.bench import ceilings
from spinn_export.bench.ceiling_fraction import measure_fraction
from spinn_export.bench.ceilings import (
    Ceiling,
    Gemm,
    case_ceiling,
    ceiling_gemm,
    cuda_support,
    measure_ceiling,
)
from spinn_export.bench.session import SuiteState
from spinn_export.hardware import cpu_support
from spinn_export.report.results import load_results
from spinn_export.report.writer import build_report
from spinn_export.runtimes.onnx import GEMM_FORMS, gemm_file

from .conftest import Pipeline, run_bench

AVX2 = {"fpu", "sse2", "avx", "avx2", "fma"}
SAPPHIRE_RAPIDS = AVX2 | {"avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}


def test_cpu_features_decide_what_is_native() -> None:
    assert cpu_support("fp32", AVX2, "AVX2") == (True, ("avx2", "fma", "torch AVX2"), None)
    native, features, reason = cpu_support("int8", AVX2, "AVX2")
    assert not native and "avx512_vnni" in reason and "avx2" in features  # int8 runs on AVX2, not natively
    assert not cpu_support("bf16", AVX2, "AVX2")[0]
    assert cpu_support("int8", AVX2 | {"avx_vnni"}, "AVX2")[:2] == (True, ("avx_vnni", "avx2", "fma", "torch AVX2"))
    for precision in ("bf16", "int8"):
        native, features, reason = cpu_support(precision, SAPPHIRE_RAPIDS, "AVX512")
        assert native and reason is None and f"amx_{precision}" in features


def test_gpu_compute_capability_decides_tensor_cores() -> None:
    assert cuda_support("fp32", (7, 0))[0]
    assert [cuda_support(p, (7, 5))[0] for p in ("bf16", "int8")] == [False, True]
    assert cuda_support("bf16", (9, 0)) == (True, ("sm_90", "tensor cores"), None)
    assert "sm_80" in cuda_support("bf16", (7, 5))[2]


class Rate:
    """A stand-in GEMM call that says which rate `best_gflops` should report for it."""

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def __call__(self) -> None:
        return None


def _gemm(name: str, precision: str, rate: float | Exception, missing: str | None = None) -> Gemm:
    def build(size: int, threads: int) -> Rate:
        if isinstance(rate, Exception):
            raise rate
        return Rate(rate)

    return Gemm(name, "cpu", precision, "onnxruntime", build, lambda: missing)


@pytest.fixture
def avx2_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ceilings, "cpu_flags", lambda: frozenset(AVX2))
    monkeypatch.setattr(ceilings, "best_gflops", lambda call, flops, seconds: call.rate)


def test_the_ceiling_is_the_best_implementation_and_keeps_every_figure(avx2_cpu: None) -> None:
    gemms = [_gemm("slow", "fp32", 40.0), _gemm("fast", "fp32", 90.0), _gemm("broken", "fp32", RuntimeError("no")),
             _gemm("absent", "fp32", 1e9, missing="not installed"), _gemm("other precision", "int8", 1e9)]
    ceiling = measure_ceiling("cpu", "fp32", 2, gemms)
    assert ceiling.gflops == 90.0 and ceiling.native and ceiling.method.startswith("best of 2: fast")
    assert dict(ceiling.measured) == {"slow": 40.0, "fast": 90.0}
    assert ceiling.to_dict()["measured"] == {"slow": 40.0, "fast": 90.0}


def test_int8_without_vnni_is_measured_as_not_native_and_bf16_is_not_measured(avx2_cpu: None) -> None:
    int8 = measure_ceiling("cpu", "int8", 2, [_gemm("u8s8", "int8", 120.0)])
    assert int8.gflops == 120.0 and not int8.native and "vnni" in int8.reason
    bf16 = measure_ceiling("cpu", "bf16", 2, [_gemm("never built", "bf16", RuntimeError("must not be timed"))])
    assert bf16.gflops is None and not bf16.native and "emulated" in bf16.reason and not bf16.measured
    nothing = measure_ceiling("cpu", "fp32", 2, [_gemm("absent", "fp32", 1.0, missing="lib is not installed")])
    assert nothing.gflops is None and "lib is not installed" in nothing.reason


CEILINGS = {"cpu": {"fp32": Ceiling(100.0, "m", True, ()), "int8": Ceiling(200.0, "m", False, (), "no vnni"),
                    "bf16": Ceiling(None, "not measured", False, (), "emulated")}}


def test_a_case_is_a_fraction_of_its_own_precisions_ceiling_only() -> None:
    assert case_ceiling(CEILINGS, "cpu", "int8-static").gflops == 200.0  # runs as int8
    assert case_ceiling(CEILINGS, "cpu", "bf16") is None and case_ceiling(CEILINGS, "cuda", "fp32") is None
    state = SuiteState(settings=None, refs={}, ceilings=CEILINGS)  # type: ignore[arg-type]
    assert state.ceiling_fields("cpu", "int8-static", 50.0) == {"ceiling_precision": "int8", "ceiling_gflops": 200.0,
                                                                "ceiling_fraction": 0.25}
    assert state.ceiling_fields("cpu", "fp32", 50.0)["ceiling_fraction"] == 0.5
    assert state.ceiling_fields("cpu", "bf16", 50.0) == {}  # never against another precision's ceiling


@pytest.mark.slow
def test_this_machines_ceilings_are_measured_with_its_detected_features() -> None:
    # In fresh processes, as in the suite: ONNX Runtime's GEMM creates the process-wide thread pool, after which
    # this process's exports (per-session pools) could not open a session.
    measured = ceilings.measure_ceilings(["cpu"], 1, processes=2)["cpu"]
    assert set(measured) == {"fp32", "bf16", "int8"}
    assert measured["fp32"].gflops > 0 and measured["fp32"].native and measured["fp32"].measured
    assert len(measured["fp32"].per_process) == 2 and "median of 2 fresh processes" in measured["fp32"].method
    flags = hardware.cpu_flags()
    for precision, ceiling in measured.items():
        assert set(ceiling.features) - {f"torch {torch.backends.cpu.get_cpu_capability()}"} <= flags
        spelled_out = {"fp32": True, "int8": bool({"amx_int8", "avx512_vnni", "avx_vnni"} & flags),
                       "bf16": bool({"amx_bf16", "avx512_bf16"} & flags)}  # the instructions, named here by hand
        assert ceiling.native == spelled_out[precision]
        assert (ceiling.gflops is None) == (precision == "bf16" and not ceiling.native)


def test_a_ceiling_over_fresh_processes_is_their_median_with_the_spread_beside_it() -> None:
    runs = [Ceiling(max(rate, other), "m", True, ("avx2",), None, (("a", rate), ("b", other)))
            for rate, other in ((90.0, 50.0), (60.0, 70.0), (100.0, 40.0))]  # each process's ceiling: its best
    ceiling = ceilings.pooled(runs, "cpu", 2)
    assert ceiling.gflops == 90.0 and ceiling.per_process == (90.0, 70.0, 100.0)
    assert dict(ceiling.measured) == {"a": 90.0, "b": 50.0}  # each implementation's median over processes
    assert ceiling.spread == pytest.approx(30.0 / 90.0)
    assert ceiling.method.startswith("median of 3 fresh processes (lowest 70, highest 100), each the best of 2: a")
    stored = ceiling.to_dict()
    assert (stored["lowest"], stored["highest"], stored["processes"]) == (70.0, 100.0, 3)
    none = Ceiling(None, "not measured", False, (), "emulated")
    assert ceilings.pooled([none, none], "cpu", 2) == none and "per_process" not in none.to_dict()


def test_the_paired_fraction_is_each_cycles_rate_over_the_gemms_rate() -> None:
    """A case of 3 GFLOP in 40 ms (75 GFLOP/s) against a GEMM of 1 GFLOP in 10 ms (100 GFLOP/s): 75 %, with the
    GEMM block as long as the case's (4 GEMMs), whatever the clock's drift within a cycle."""
    now, drift = [0.0], [1.0]

    def timed(seconds: float):
        def call() -> None:
            now[0] += seconds * drift[0]
            drift[0] *= 1.001  # the machine slows down steadily
        return call

    measured = measure_fraction(timed(0.040), 3e9, timed(0.010), 1e9, cycles=4, clock=lambda: now[0])
    assert (measured.cases_per_block, measured.gemms_per_block) == (1, 4)
    assert (measured.fraction == pytest.approx(0.75, rel=1e-2)
            and measured.ci_low <= measured.fraction <= measured.ci_high)
    assert measured.case_gflops == pytest.approx(75, rel=0.05) and measured.gemm_gflops == pytest.approx(100, rel=0.05)


def test_the_ceiling_gemm_is_the_implementation_that_set_it() -> None:
    built = []
    gemms = [Gemm(name, "cpu", "fp32", "onnxruntime",
                  lambda size, threads, name=name: built.append((name, size, threads)) or name)
             for name in ("slow", "fast")]
    ceiling = Ceiling(90.0, "best of 2: fast", True, (), measured=(("slow", 40.0), ("fast", 90.0)))
    gemm, call, flops = ceiling_gemm(ceiling, "cpu", "fp32", 2, gemms)
    assert gemm.name == call == "fast" and built == [("fast", ceilings.GEMM_SIZE["cpu"], 2)]
    assert flops == 2.0 * ceilings.GEMM_SIZE["cpu"] ** 3


@pytest.mark.parametrize("form", GEMM_FORMS)
def test_each_ceiling_gemm_form_is_the_matmul_onnx_runtime_computes(form: str) -> None:
    """The ceilings time these graphs; each must be one square product by its constant weights (fast lane: 8 x 8)."""
    with gemm_file(form, 8) as (path, x):
        (y,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"A": x})
        weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    assert y.shape == (8, 8)
    if form == "float":
        np.testing.assert_allclose(y, x @ weights["W"], rtol=1e-4, atol=1e-4)
    elif form == "integer":
        np.testing.assert_array_equal(y, x.astype(np.int32) @ weights["W"].astype(np.int32))
    else:  # qdq: the input rounded to its uint8 grid, the weights scaled, then a float product
        a = (np.clip(np.round(x / 0.02) + 128, 0, 255) - 128) * np.float32(0.02)
        np.testing.assert_allclose(y, a @ (weights["W"].astype(np.float32) * np.float32(0.01)), rtol=1e-3, atol=1e-3)
    assert not path.exists()  # the temporary file goes with the block


def test_the_suite_pairs_dense_with_the_ceilings_gemm_and_the_report_shows_it(pipeline: Pipeline,
                                                                               tmp_path: Path) -> None:
    spinn = json.loads(pipeline.ort_json.read_text())["spinn"]
    [entry] = spinn["ceiling_fractions"]
    fp32 = spinn["ceilings"]["cpu"]["fp32"]
    assert ((entry["backend"], entry["variant"], entry["precision"], entry["device"])
            == ("ort-cpu", "dense", "fp32", "cpu"))
    assert entry["batch"] == max(b["extra_info"]["batch"]
                                 for b in json.loads(pipeline.ort_json.read_text())["benchmarks"])
    assert entry["ceiling_gemm"] == max(fp32["measured"], key=fp32["measured"].get)
    assert 0 < entry["ci_low"] <= entry["fraction"] <= entry["ci_high"] and entry["cycles"] >= 4
    assert entry["fraction"] == pytest.approx(entry["case_gflops"] / entry["gemm_gflops"], rel=0.5)  # medians vs cycles
    paths = build_report([pipeline.ort_json], None, None, tmp_path / "report")
    table = pd.read_csv(paths.csv_dir / "ceiling_fractions.csv")
    assert list(table["backend"]) == ["ort-cpu"] and table["fraction of ceiling"][0] == pytest.approx(entry["fraction"])
    assert "Fraction of the ceiling, paired" in paths.markdown.read_text()


def test_a_compiled_backend_is_compiled_before_its_fraction_is_timed(pipeline: Pipeline) -> None:
    """compile-cpu compiles each batch's graph on its first call, and refuses a compile while timed: the fraction's
    case is prepared (compiled) first, then timed under the guard. (No latency case runs, so no JSON is written:
    the suite's summary line is the result.)"""
    proc = run_bench("bench", f"--spinn-artifacts={pipeline.manifest.parent}", "--spinn-backends=compile-cpu",
                     "--spinn-variants=dense", "--spinn-batches=256", "--spinn-quick", "--spinn-threads=1",
                     "-k", "paired_ceiling_fraction")
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-3000:]
    assert re.search(r"dense on compile-cpu at batch 256: \d+% \[\d+%, \d+%\] of the ceiling", proc.stdout)


def _rewritten(source: Path, out: Path, change: Any) -> Path:
    data = json.loads(source.read_text())
    change(data)
    out.write_text(json.dumps(data))
    return out


def _as_int8_static(data: dict[str, Any]) -> None:
    """One latency case relabelled as a static int8 variant (the tiny pipeline exports float32 only)."""
    info = data["benchmarks"][0]["extra_info"]
    info.update(variant="structured-int8-static", precision="int8-static")


def test_the_report_takes_each_cases_ceiling_from_its_precision(pipeline: Pipeline, tmp_path: Path) -> None:
    path = _rewritten(pipeline.eager_json, tmp_path / "int8.json", _as_int8_static)
    bench = load_results([path]).benchmarks.set_index(["variant", "batch"])
    ceilings = json.loads(path.read_text())["spinn"]["ceilings"]["cpu"]
    int8 = bench[bench["precision"] == "int8-static"].iloc[0]
    assert int8["ceiling_precision"] == "int8" and int8["ceiling_gflops"] == ceilings["int8"]["gflops"]
    fp32 = bench[bench["precision"] == "fp32"]
    assert (fp32["ceiling_gflops"] == ceilings["fp32"]["gflops"]).all()
    paths = build_report([path], None, None, tmp_path / "report")
    table = {name: pd.read_csv(paths.csv_dir / f"{name}.csv") for name in ("gflops", "ceilings")}
    assert set(table["ceilings"]["precision"]) == {"fp32", "bf16", "int8"}
    row = table["gflops"][table["gflops"]["variant"] == "structured-int8-static"].iloc[0]
    assert row["ceiling precision"] == "int8" and row["fraction of ceiling"] == pytest.approx(
        row["GFLOP/s"] / ceilings["int8"]["gflops"])
    assert "the fraction is of the ceiling of the case's own device and precision" in paths.markdown.read_text()


def _legacy(data: dict[str, Any]) -> None:
    """As the suite wrote it before per-precision ceilings: one float32 figure, no fastest deployment, and no schema
    stamp (the previous release's block)."""
    _as_int8_static(data)
    spinn = data["spinn"]
    spinn.pop("schema"), spinn.pop("version")
    spinn["ceiling_gflops"] = spinn.pop("ceilings")["cpu"]["fp32"]["gflops"]
    for key in ("fastest", "fastest_skipped", "skipped"):
        spinn.pop(key)


def test_results_with_only_the_old_float32_ceiling_still_load(pipeline: Pipeline, tmp_path: Path) -> None:
    path = _rewritten(pipeline.eager_json, tmp_path / "old.json", _legacy)
    old = json.loads(path.read_text())["spinn"]["ceiling_gflops"]
    results = load_results([path])
    assert list(results.ceilings[["device", "precision", "gflops"]].itertuples(index=False, name=None)) == [
        ("cpu", "fp32", old)]
    bench = results.benchmarks
    assert (bench.loc[bench["precision"] == "fp32", "ceiling_gflops"] == old).all()
    assert bench.loc[bench["precision"] == "int8-static", "ceiling_gflops"].isna().all()  # never fp32's for int8
    assert results.fastest.empty and "predates" in results.fastest_skipped["reason"].iloc[0]
    markdown = build_report([path], None, None, tmp_path / "old-report").markdown.read_text()
    assert ("The fastest verified deployment was not measured: the suite that wrote these results predates it."
            in markdown)
