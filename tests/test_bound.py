"""The same-kernel, same-shape bound (`bench.bound`, `bench.layer_models`): one-layer models cut from real exported
files compute what the deployment computes, layer by layer; the split and the share are checked on synthetic numbers
and a virtual clock, never on measured times; the suite stores the bound and the report shows it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import pytest
import torch

from spinn_export.bench.bound import LayerCalls, LayerSeconds, bound_text, measure_bound, split
from spinn_export.bench.layer_models import layer_models
from spinn_export.export.exporter import export_checkpoints
from spinn_export.export.formats import parse_formats
from spinn_export.model.checkpoint import save_checkpoint
from spinn_export.model.mlp import mlp_network
from spinn_export.model.spec import MLPSpec
from spinn_export.report.writer import build_report
from spinn_export.runtimes.profile import summarize_calls

from .conftest import Pipeline

SPEC = MLPSpec(18, (32, 24), 2)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MLP exported as float32 ONNX and as ONNX Runtime's dynamic int8."""
    directory = tmp_path_factory.mktemp("bound")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(directory / "dense.safetensors", mlp_network(SPEC), {"variant": "dense"})
    export_checkpoints([checkpoint], directory / "artifacts", parse_formats("onnx,onnx-int8"))
    return directory / "artifacts"


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("name", ["dense.onnx", "dense.int8.onnx"])
def test_the_one_layer_models_chained_compute_the_deployment(exported: Path, tmp_path: Path, name: str) -> None:
    """Each layer's activation model fed the previous one's output gives the deployment's output: the cut takes
    every node, weight and quantiser of the file, and only those of its layer."""
    cut = layer_models(exported / name, tmp_path)
    assert [(layer.in_features, layer.out_features, layer.activation) for layer in cut.layers] == [
        (18, 32, "Tanh"), (32, 24, "Tanh"), (24, 2, None)] and cut.left_out == ()
    quantised = name != "dense.onnx"
    assert all(("quantise" in layer.files) == quantised for layer in cut.layers)
    assert cut.layers[0].shape(8192) == "8192x18x32" and cut.in_features == 18
    x = np.random.default_rng(0).standard_normal((7, 18), dtype=np.float32)
    h = x
    for layer in cut.layers:
        h = _run(layer.files["activation" if layer.activation else "gemm"], h)
    np.testing.assert_array_equal(h, _run(exported / name, x))
    assert _run(cut.floor, x).shape == (7, 1)  # the empty model: one column of its input, nothing computed
    gemm_only = _run(cut.layers[0].files["gemm"], x)
    np.testing.assert_allclose(np.tanh(gemm_only), _run(cut.layers[0].files["activation"], x), atol=1e-6)


def test_openvino_compiles_the_one_layer_models_with_the_deployments_settings(exported: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from spinn_export.bench.backends import get_backend, sample_input

    cut = layer_models(exported / "dense.onnx", tmp_path)
    backend = get_backend("openvino-cpu")
    for layer in cut.layers:
        runner = backend.load(layer.files["gemm"], 1)
        assert "f32" in runner.provider
        out = runner.infer(sample_input(4, layer.in_features))
        np.testing.assert_allclose(out, _run(layer.files["gemm"], sample_input(4, layer.in_features)), atol=1e-5)


def test_the_split_sums_to_the_latency_and_the_bound_is_one_floor_plus_each_gemm() -> None:
    """Synthetic seconds: floor 1, an int8 layer (quantise 2, gemm 5, activation 6) and a float one (gemm 4)."""
    parts = split(12.0, 1.0, [LayerSeconds(gemm=5.0, quantise=2.0, activation=6.0), LayerSeconds(gemm=4.0)])
    assert (parts.floor_s, parts.quantise_s, parts.gemm_s, parts.activation_s) == (1.0, 1.0, 3.0 + 3.0, 1.0)
    assert parts.other_s == 12.0 - 1.0 - 1.0 - 6.0 - 1.0
    assert parts.floor_s + parts.quantise_s + parts.gemm_s + parts.activation_s + parts.other_s == 12.0
    assert parts.bound_s == 1.0 + (5.0 - 1.0) + (4.0 - 1.0) and parts.share == pytest.approx(8.0 / 12.0)
    assert parts.floor_compute_share == pytest.approx(9.0 / 12.0)
    noisy = split(10.0, 2.0, [LayerSeconds(gemm=1.5), LayerSeconds(gemm=1.0)])  # a busy round: GEMMs under the floor
    assert noisy.bound_s == 2.0 and noisy.gemm_s == -1.5 and noisy.share > 0  # the bound is never below one floor


def test_a_quantiser_the_kernel_before_it_can_run_is_not_in_the_bound() -> None:
    """A static quantiser of a layer's output runs as the previous GEMM's epilogue in a fused deployment (OpenVINO's
    int8): the bound counts the GEMM alone there, and the quantiser of the graph's input (nothing runs before it)."""
    first, second = LayerSeconds(gemm=5.0, quantise=2.0), LayerSeconds(gemm=7.0, quantise=3.0, foldable=True)
    parts = split(20.0, 1.0, [first, second])
    assert parts.bound_s == 1.0 + (2.0 - 1.0) + (5.0 - 2.0) + (7.0 - 3.0)
    assert parts.quantise_s == (2.0 - 1.0) + (3.0 - 1.0)  # the split still shows what the one-layer models ran


def test_static_quantisers_after_the_first_layer_are_foldable_dynamic_ones_never(tmp_path: Path) -> None:
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "dense.safetensors", mlp_network(SPEC), {"variant": "dense"})
    export_checkpoints([checkpoint], tmp_path / "artifacts", parse_formats("onnx-int8,onnx-int8-static"))
    (tmp_path / "dynamic").mkdir(), (tmp_path / "static").mkdir()
    dynamic = layer_models(tmp_path / "artifacts" / "dense.int8.onnx", tmp_path / "dynamic")
    static = layer_models(tmp_path / "artifacts" / "dense.int8-static.onnx", tmp_path / "static")
    assert [layer.foldable for layer in dynamic.layers] == [False, False, False]
    assert [layer.foldable for layer in static.layers] == [False, True, True]


def test_the_bound_is_measured_in_rounds_interleaved_with_the_deployment() -> None:
    """A virtual clock: each call advances it by a known time, so every round gives the same split exactly."""
    now = [0.0]

    def takes(seconds: float):
        def call() -> None:
            now[0] += seconds
        return call

    layers = [LayerCalls("8x18x32", takes(5e-3), takes(2e-3), takes(6e-3)), LayerCalls("8x32x2", takes(4e-3))]
    bound = measure_bound(takes(12e-3), takes(1e-3), layers, rounds=5, block_seconds=0.03, clock=lambda: now[0])
    assert bound.split["latency_s"] == pytest.approx(12e-3) and bound.split["other_s"] == pytest.approx(3e-3)
    assert bound.bound_s == pytest.approx(8e-3) and bound.share == pytest.approx(8 / 12)
    assert bound.ci_low == pytest.approx(bound.share) == pytest.approx(bound.ci_high) and bound.rounds == 5
    assert bound.layers[0] == {"shape": "8x18x32", "quantise": pytest.approx(2e-3), "gemm": pytest.approx(5e-3),
                               "activation": pytest.approx(6e-3)}
    assert "67% [67%, 67%] of its same-kernel, same-shape bound" in bound_text(bound.to_dict())
    assert bound_text({"reason": "no ONNX file"}) == "same-kernel bound not measured: no ONNX file"


def test_the_profilers_wall_time_beyond_its_operators_is_the_overhead_it_does_not_see() -> None:
    profiled = summarize_calls("t", [{"Gemm": 3.0, "Tanh": 1.0}] * 3, "n", walls=[5.0, 6.0, 7.0])
    assert profiled.wall_s == 6.0 and profiled.unprofiled_s == 2.0 and profiled.to_dict()["unprofiled_s"] == 2.0
    assert summarize_calls("t", [{"Gemm": 1.0}], "n").unprofiled_s is None


def test_the_suite_stores_the_same_kernel_bound_and_the_report_shows_it(pipeline: Pipeline, tmp_path: Path) -> None:
    raw = json.loads(pipeline.ort_json.read_text())
    for entry in raw["spinn"]["fastest"]:
        bound = entry["same_kernel"]
        assert bound["rounds"] == 4 and [layer["shape"].split("x")[0] for layer in bound["layers"]] == [
            str(entry["batch"])] * 3  # the tiny pipeline's three GEMMs, at the deployment's batch
        assert sum(bound["split"][part] for part in ("floor_s", "quantise_s", "gemm_s", "activation_s", "other_s")) \
            == pytest.approx(bound["split"]["latency_s"])
        assert bound["ci_low"] <= bound["share"] <= bound["ci_high"] and set(bound["floors"]) == {"ort-cpu"}
    table = pd.read_csv(build_report([pipeline.ort_json], None, None, tmp_path / "r").csv_dir / "limits.csv")
    assert sorted(table["batch"]) == [1, 256] and "% of the same-kernel bound" in table


def test_a_share_above_the_same_kernel_bound_is_said_not_to_be_a_bound() -> None:
    """OpenVINO's fused int8 ran at 161 % of its one-layer models' sum: the report says the figure is no bound."""
    from spinn_export.report.limits import _holds

    assert _holds(0.8) == "yes" and _holds(1.0) == "yes"
    assert _holds(1.57).startswith("no: the deployment is faster than its one-layer models")
