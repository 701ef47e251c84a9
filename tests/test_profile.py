"""Where a call's time goes, from the runtimes' own profilers on real sessions: OpenVINO's PERF_COUNT and ONNX Runtime's
profiler, by operator type, the matrix products told apart from the rest."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import torch

from spinn_export.bench.backends import get_backend, sample_input
from spinn_export.export.formats.onnx import onnx_bytes
from spinn_export.model.mlp import mlp_network
from spinn_export.model.spec import MLPSpec
from spinn_export.runtimes.profile import PROFILED_CALLS, TimeByOperator, is_gemm, shares_text, summarize_calls

SPEC = MLPSpec(18, (64, 64), 2)


def test_each_operator_is_its_median_over_the_calls_and_gemms_are_told_apart():
    profiled = summarize_calls("test", [{"FusedGemm": 3.0, "Tanh": 1.0}, {"FusedGemm": 5.0}, {"FusedGemm": 4.0,
                                                                                                 "Tanh": 2.0}], "n")
    assert dict(profiled.by_operator) == {"FusedGemm": 4.0, "Tanh": 1.0} and profiled.calls == 3
    assert profiled.gemm_share == pytest.approx(0.8)
    assert shares_text(profiled.to_dict()) == "GEMMs 80% of the profiled time (FusedGemm 80%, Tanh 20%)"
    assert is_gemm("FullyConnectedQuantizedLegacy") and is_gemm("MatMulInteger") and not is_gemm("FakeQuantize")


def _profiled(backend: str, path: str) -> TimeByOperator | None:
    """In a fresh process: ort-cpu creates ONNX Runtime's global pool, which later sessions here could not share."""
    runner = get_backend(backend).load(Path(path), 1)
    return runner.time_by_operator(sample_input(256, SPEC.in_features))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["ort-cpu", "openvino-cpu"])
def test_the_runtimes_profiler_reports_each_operator_of_a_real_call(backend, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "m.onnx"
    network = mlp_network(SPEC)
    network.module.eval()
    path.write_bytes(onnx_bytes(network, 18))
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        profiled = pool.submit(_profiled, backend, str(path)).result()
    assert profiled is not None and profiled.calls == PROFILED_CALLS
    assert any(is_gemm(name) and seconds > 0 for name, seconds in profiled.by_operator)
    assert 0 < profiled.gemm_share <= 1 and profiled.gemm_s > 0


def test_a_backend_without_a_profiler_says_none():
    torch.manual_seed(0)
    runner = get_backend("eager-cpu").load(mlp_network(SPEC).module.eval(), 1)
    assert runner.time_by_operator(sample_input(4, SPEC.in_features)) is None
