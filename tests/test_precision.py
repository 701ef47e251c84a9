"""Low-precision variants on real runtimes: static int8 calibrated on the training inputs (ONNX Runtime's
quantize_static), judged on the validation split against the float32 model and the R^2 budget, the names
they go by, the backends that run them, and every unusable calibration set as one line with nothing written."""
from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from spinn_export.bench.backends import get_backend
from spinn_export.bench.variants import Variant, open_runner, possible_variants, refs_from_manifest
from spinn_export.errors import UserError
from spinn_export.export.exporter import export_checkpoints
from spinn_export.export.formats import (
    MIN_CALIBRATION_ROWS,
    calibration_inputs,
    formats,
    load_artifact,
    parse_formats,
    unavailable_formats,
)
from spinn_export.export.manifest import MANIFEST_NAME
from spinn_export.export.parity import accuracy
from spinn_export.model.checkpoint import load_checkpoint, save_checkpoint
from spinn_export.model.mlp import mlp_network
from spinn_export.model.spec import MLPSpec
from spinn_export.task.data import Dataset, builtin_dataset, load_user_dataset
from spinn_export.task.stokes import STOKES

from .conftest import assert_clean_error, run_cli

SPEC = MLPSpec(18, (64, 64), 2)
STATIC = parse_formats("onnx,onnx-int8-static")
INT8 = parse_formats("onnx,onnx-int8,onnx-int8-static")


def _checkpoint(path: Path, **metadata: str) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(path, mlp_network(SPEC), {"variant": "dense", **metadata})


def _records(directory: Path) -> dict[tuple[str, str], dict]:
    return {(r["model"], r["format"]): r for r in json.loads((directory / MANIFEST_NAME).read_text())["artifacts"]}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint that names the built-in task, and one that names no data (the benchmark's seeded models)."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("out")
    named = _checkpoint(src / "named.safetensors", dataset="stokes2d", seed="0")
    unnamed = _checkpoint(src / "unnamed.safetensors")
    export_checkpoints([named, unnamed], out, INT8)
    return out


def test_static_int8_is_calibrated_verified_and_judged_against_float32(exported):
    record = _records(exported)["named", "onnx-int8-static"]
    assert record["precision"] == "int8-static" and record["file"] == "named.int8-static.onnx"
    assert record["calibration"] == {"dataset": "stokes2d", "split": "train", "rows": 4096, "source": "checkpoint"}
    ops = {node.op_type for node in onnx.load(str(exported / record["file"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "DynamicQuantizeLinear" not in ops  # static QDQ
    parity = record["parity"]
    assert parity["criterion"] == "recorded" and parity["max_abs_error"] > 0
    assert [tuple(s) for s in parity["weight_shapes"]] == SPEC.layer_shapes  # found through the DequantizeLinear
    measured = record["accuracy"]
    assert measured["dataset"] == "stokes2d" and measured["split"] == "val" and measured["max_r2_drop"] == 0.01
    assert measured["val_r2_delta"] == pytest.approx(measured["val_r2"] - measured["val_r2_reference"])
    assert record["within_budget"] == (-measured["val_r2_delta"] <= 0.01)
    assert measured["residual_rms"] is None and measured["residual_rms_reference"] > 0
    assert _records(exported)["named", "onnx"]["calibration"] is None


@pytest.mark.parametrize("fmt", ["onnx-int8", "onnx-int8-static"])
def test_int8_weights_use_7_bits_so_cpus_without_vnni_cannot_saturate(exported, fmt):
    """Without VNNI, x86 int8 kernels sum u8 x s8 pairs in 16 bits (vpmaddubsw): 8-bit weights can overflow it,
    which cost 0.018 R^2 on the reference dense model. Reduced-range weights (|w| <= 64) cannot:
    2 x 255 x 64 = 32,640 < 32,767."""
    graph = onnx.load(str(exported / _records(exported)["named", fmt]["file"])).graph
    int8 = [onnx.numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    weights = [w for w in int8 if w.ndim == 2]  # not the zero points
    assert sum(w.size for w in weights) >= SPEC.params - sum(SPEC.widths) - SPEC.out_features  # every weight matrix
    assert all(np.abs(w.astype(np.int32)).max() <= 64 for w in weights)
    assert all(np.abs(w.astype(np.int32)).max() > 32 for w in weights)  # the reduced range is used, not less


def test_a_checkpoint_naming_no_data_is_calibrated_on_the_builtin_task_and_not_judged(exported):
    record = _records(exported)["unnamed", "onnx-int8-static"]
    assert record["calibration"]["source"] == "default" and record["calibration"]["dataset"] == "stokes2d"
    assert record["accuracy"] is None and record["within_budget"] is None  # no labels it is known to model


def test_the_budget_marks_a_variant_that_loses_too_much_r2(exported):
    checkpoint = load_checkpoint(exported / "named.safetensors")
    artifact = load_artifact(exported / "named.int8-static.onnx")
    dataset = builtin_dataset(0)
    shifted = accuracy(checkpoint.network.module, lambda x: artifact(x) + 0.05, dataset, max_r2_drop=0.01)
    assert shifted.val_r2_delta < -0.01 and not shifted.within_budget
    assert accuracy(checkpoint.network.module, lambda x: artifact(x) + 0.05, dataset, max_r2_drop=1.0).within_budget


def _ort_static(directory: str) -> tuple[str, float, float]:
    """In a fresh process: ort-cpu opens the static QDQ file on its global pool and checks it before timing."""
    ref = {r.name: r for r in refs_from_manifest(Path(directory))}["dense-int8-static:named"]
    runner = open_runner("ort-cpu", ref, threads=1)
    return runner.provider, runner.parity.max_abs_error, ref.recorded_error


@pytest.mark.slow
def test_static_int8_runs_on_onnx_runtime_within_its_recorded_error(exported):
    refs = {r.name: r for r in refs_from_manifest(exported)}
    assert {"dense-int8-static:named", "dense-int8-static:unnamed"} <= set(refs)
    assert refs["dense-int8-static:named"].file("onnx").name == "named.int8-static.onnx"
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        provider, error, recorded = pool.submit(_ort_static, str(exported)).result()  # ORT's global pool: own process
    assert provider == "CPUExecutionProvider" and 0 < error <= 2 * recorded
    assert "not int8-static" in Variant("dense", "int8-static").unsupported_reason(get_backend("eager-cpu"))


@pytest.mark.slow
def test_user_data_calibrates_and_judges_the_static_model(tmp_path):
    inputs = STOKES.sample_inputs(400, torch.Generator().manual_seed(1))
    table = pd.DataFrame(inputs.numpy(), columns=list(STOKES.input_names))
    table[["u", "v"]] = STOKES.solution(inputs.double()).float().numpy()
    table.to_csv(tmp_path / "flow.csv", index=False)
    data = load_user_dataset(tmp_path / "flow.csv", list(STOKES.input_names), ["u", "v"])
    checkpoint = _checkpoint(tmp_path / "mine.safetensors", dataset="flow")
    export_checkpoints([checkpoint], tmp_path / "out", STATIC, data=data)
    record = _records(tmp_path / "out")["mine", "onnx-int8-static"]
    assert record["calibration"] == {"dataset": "flow", "split": "train", "rows": 320, "source": "given"}
    assert record["accuracy"]["dataset"] == "flow" and record["accuracy"]["residual_rms_reference"] is None
    assert record["accuracy"]["residual_note"] == "no physics residual is known for this data"


def _dataset(x_train: torch.Tensor) -> Dataset:
    reference = builtin_dataset(0)
    width = x_train.shape[1]
    return Dataset("given", tuple(f"c{i}" for i in range(width)), ("u", "v"), x_train, torch.zeros(len(x_train), 2),
                   reference.x_val[:, :width], reference.y_val, reference.x_test[:, :width], reference.y_test)


@pytest.mark.parametrize("rows, message", [
    ("few", f"has 50 training rows; calibrated formats need at least {MIN_CALIBRATION_ROWS}"),
    ("nan", "has 1 row\\(s\\) with NaN or infinite values, first at row 3"),
    ("narrow", "the model maps 18 inputs to 2 outputs but the data has 17 inputs"),
    ("named", "need the training inputs of its data \\('mydata'\\); pass --data"),
])
@pytest.mark.parametrize("quantiser", ["onnx-int8-static", "onnx-int8-nncf"])
def test_unusable_calibration_data_is_one_line_and_writes_nothing(tmp_path, rows, message, quantiser):
    x = builtin_dataset(0).x_train[:1000].clone()
    x[3, 5] = float("nan")
    data = {"few": _dataset(x[:50]), "nan": _dataset(x), "narrow": _dataset(x[:, :17]), "named": None}[rows]
    checkpoint = _checkpoint(tmp_path / "m.safetensors", dataset="mydata")
    with pytest.raises(UserError, match=message) as info:
        export_checkpoints([checkpoint], tmp_path / "out", parse_formats(f"onnx,{quantiser}"), data=data)
    assert "\n" not in str(info.value) and not (tmp_path / "out").exists()


def test_calibration_rows_are_checked_for_width_and_kept_to_a_bounded_sample():
    x = np.zeros((10_000, 18), np.float64)
    rows = calibration_inputs(x, 18, "test")
    assert rows.dtype == np.float32 and rows.shape == (4096, 18)
    with pytest.raises(UserError, match=r"calibration data \(test\) has 17 columns but the model takes 18"):
        calibration_inputs(x[:, :17], 18, "test")


def test_precision_variant_names_round_trip_and_pick_their_backends():
    names = [v.name for v in possible_variants(["fp32", "bf16", "int8", "int8-static"]) if v.role != "magnitude"]
    assert names == ["dense", "structured", "dense-bf16", "structured-bf16", "dense-int8", "structured-int8",
                     "dense-int8-static", "structured-int8-static"]
    for name in [*names, "magnitude-masked-int8-static", "structured-int8-static:mine"]:
        assert Variant.parse(name).name == name
    assert Variant.parse("magnitude-masked-int8-static") == Variant("magnitude", "int8-static")
    for bad in ("dense-static", "dense-int8-int4", "dense-fp32", "magnitude-int8-static-masked"):
        with pytest.raises(UserError, match="not a variant name"):
            Variant.parse(bad)
    static = Variant("structured", "int8-static")
    assert static.unsupported_reason(get_backend("ort-cpu")) is None  # a backend that runs int8 runs QDQ int8 too
    assert static.unsupported_reason(get_backend("ort-optimized-cpu")) is not None


@pytest.mark.slow
def test_formats_all_is_what_this_machine_can_produce_and_says_why_not_the_rest(tmp_path):
    skipped = unavailable_formats()
    assert {f.name for f in parse_formats("all")} == set(formats()) - set(skipped)
    assert all(reason and "\n" not in reason for reason in skipped.values())
    checkpoint = _checkpoint(tmp_path / "m.safetensors", dataset="mydata")  # calibration will refuse: no --data
    result = run_cli("export", str(checkpoint), "--out", str(tmp_path / "out"), "--formats", "all")
    assert result.stdout.splitlines() == [f"skipped {name}: {reason}" for name, reason in skipped.items()]
    assert_clean_error(result, "onnx-int8-static", "--data")
    assert not (tmp_path / "out").exists()
