"""OpenVINO-native int8 (`onnx-int8-nncf`) on real NNCF and OpenVINO: calibrated on the training inputs, its accuracy
control held to --max-r2-drop on held-out training rows, judged on the validation split, run on openvino-cpu, an
unmeetable target reported with the drop reached, and a missing NNCF skipped with the reason."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from spinn_export.bench.backends import get_backend
from spinn_export.bench.variants import Variant, open_runner, refs_from_manifest
from spinn_export.errors import UserError
from spinn_export.export.exporter import export_checkpoints
from spinn_export.export.formats import (
    CALIBRATION_ROWS,
    CONTROL_ROWS,
    Calibration,
    control_rows,
    formats,
    parse_formats,
    unavailable_formats,
)
from spinn_export.export.formats.onnx import onnx_bytes
from spinn_export.export.formats.onnx_int8_nncf import int8_gemms, quantise
from spinn_export.export.manifest import MANIFEST_NAME
from spinn_export.model.checkpoint import save_checkpoint
from spinn_export.model.mlp import mlp_network
from spinn_export.model.spec import MLPSpec
from spinn_export.report.results import load_manifest
from spinn_export.report.summary import export_clause
from spinn_export.runtimes import nncf as nncf_runtime
from spinn_export.task.data import builtin_dataset

SPEC = MLPSpec(18, (64, 64), 2)
NNCF = parse_formats("onnx,onnx-int8-nncf")


def _records(directory: Path) -> dict[tuple[str, str], dict]:
    return {(r["model"], r["format"]): r for r in json.loads((directory / MANIFEST_NAME).read_text())["artifacts"]}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint that names the built-in task (accuracy-controlled), and one that names no data (plain NNCF)."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("out")
    torch.manual_seed(0)
    network = mlp_network(SPEC)
    named = save_checkpoint(src / "named.safetensors", network, {"variant": "dense", "dataset": "stokes2d",
                                                                 "seed": "0"})
    unnamed = save_checkpoint(src / "unnamed.safetensors", network, {"variant": "dense"})
    export_checkpoints([named, unnamed], out, NNCF)
    return out


@pytest.mark.slow
def test_accuracy_control_runs_on_held_out_training_rows_and_the_verdict_on_validation(exported):
    record = _records(exported)["named", "onnx-int8-nncf"]
    assert record["precision"] == "int8-nncf" and record["file"] == "named.int8-nncf.onnx"
    calibration = record["calibration"]
    assert calibration["rows"] == CALIBRATION_ROWS and calibration["quantiser"].startswith("nncf ")
    control = calibration["accuracy_control"]
    assert control["rows"] == CONTROL_ROWS and control["max_r2_drop"] == 0.01 and control["validations"] >= 2
    assert 1 <= calibration["int8_gemms"] <= calibration["gemms"] == 3
    assert control["met"] == (control["r2_drop"] <= 0.01)
    assert record["accuracy"]["split"] == "val"  # the verdict is measured where the control never looked
    assert record["within_budget"] == (-record["accuracy"]["val_r2_delta"] <= 0.01)
    weights = onnx.load(str(exported / record["file"])).graph.initializer
    assert any(w.data_type == onnx.TensorProto.INT8 for w in weights)  # int8 weights in the file, not a float copy


@pytest.mark.slow
def test_without_known_data_it_is_plain_nncf_and_not_judged(exported):
    record = _records(exported)["unnamed", "onnx-int8-nncf"]
    assert record["calibration"]["source"] == "default" and record["calibration"]["accuracy_control"] is None
    assert record["accuracy"] is None and record["within_budget"] is None


@pytest.mark.slow
def test_it_runs_on_openvino_within_its_recorded_error(exported):
    refs = {r.name: r for r in refs_from_manifest(exported)}
    ref = refs["dense-int8-nncf:named"]
    assert ref.file("onnx").name == "named.int8-nncf.onnx"
    runner = open_runner("openvino-cpu", ref, threads=1)  # raises unless within twice the recorded error
    assert runner.parity.passed and "f32" in runner.provider  # its float parts at f32, not bf16 on AMX CPUs


def test_the_variant_name_round_trips_and_runs_where_int8_runs():
    variant = Variant.parse("structured-int8-nncf")
    assert variant == Variant("structured", "int8-nncf") and variant.quantised
    assert variant.unsupported_reason(get_backend("openvino-cpu")) is None
    assert "not int8-nncf" in variant.unsupported_reason(get_backend("eager-cpu"))


@pytest.mark.slow
def test_an_unmeetable_target_keeps_the_best_int8_model_and_reports_the_drop():
    torch.manual_seed(0)
    network = mlp_network(SPEC)
    model = network.module.eval()
    data = builtin_dataset(0)
    x = data.x_train[:CONTROL_ROWS].numpy()
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy() + np.float32(0.01) * np.random.default_rng(0).standard_normal(
            (len(x), 2), dtype=np.float32)
    proto = onnx.load_from_string(onnx_bytes(network, 18))
    chosen, record = quantise(proto, Calibration(x[:1024], -1.0, (x, y)))  # no model gains 1.0 of R²
    control = record["accuracy_control"]
    assert control["met"] is False and np.isfinite(control["r2_drop"]) and control["r2_drop"] > -1.0
    assert int8_gemms(chosen)[0] == record["int8_gemms"] >= 1  # the file written is still an int8 model


def test_control_rows_with_nan_targets_are_one_line():
    x, y = np.zeros((200, 18), np.float32), np.zeros((200, 2), np.float32)
    y[7, 1] = np.nan
    with pytest.raises(UserError, match=r"accuracy-control data \(t\) has 1 row\(s\) with NaN .* first at row 7"):
        control_rows(x, y, "t")


@pytest.mark.slow
def test_without_nncf_the_format_is_skipped_with_the_reason_in_the_manifest_and_summary(monkeypatch, tmp_path):
    monkeypatch.setattr(nncf_runtime, "installed_version", lambda name: None)
    reason = unavailable_formats()["onnx-int8-nncf"]
    assert reason == "nncf is not installed (pip install 'spinn-export[cpu]')"
    with pytest.raises(UserError, match="format 'onnx-int8-nncf' is unavailable here: nncf is not installed"):
        parse_formats("onnx-int8-nncf")
    assert "onnx-int8-nncf" not in {f.name for f in parse_formats("all")} and "onnx-int8-nncf" in formats()
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "m.safetensors", mlp_network(SPEC), {"variant": "dense"})
    export_checkpoints([checkpoint], tmp_path / "out", parse_formats("onnx"), unavailable=unavailable_formats())
    assert json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["unavailable"]["onnx-int8-nncf"] == reason
    assert f"onnx-int8-nncf ({reason})" in export_clause(load_manifest(tmp_path / "out"))


def test_importing_nncf_through_the_runtime_turns_its_telemetry_off(monkeypatch):
    monkeypatch.delenv(nncf_runtime.TELEMETRY_OFF, raising=False)
    nncf_runtime.nncf_module()
    assert os.environ[nncf_runtime.TELEMETRY_OFF] == "1"
