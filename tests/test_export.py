"""The exporter on real files and real runtimes: tiny dense, structured and magnitude models, every default format."""
from __future__ import annotations

import copy
import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from spinn_export.errors import UserError
from spinn_export.export.exporter import export_checkpoints, export_one
from spinn_export.export.formats import default_formats, get_format, load_artifact, parse_formats
from spinn_export.export.formats.exported_program import load_exported_program
from spinn_export.export.formats.onnx import write_onnx
from spinn_export.export.formats.torchscript import load_torchscript
from spinn_export.export.manifest import MANIFEST_NAME, read_manifest
from spinn_export.export.parity import eager
from spinn_export.files import sha256_of
from spinn_export.model.checkpoint import load_checkpoint, save_checkpoint
from spinn_export.model.mlp import mlp_network
from spinn_export.model.spec import MLPSpec
from spinn_export.runtimes.onnxruntime import load_session as load_onnx_session

from .conftest import linear_layers

DENSE = MLPSpec(18, (32, 24), 2)
STRUCTURED = DENSE.with_widths((20, 12))
CONTRACT_KEYS = {
    "model", "variant", "format", "file", "bytes", "sha256", "checkpoint", "checkpoint_sha256", "params",
    "nonzero_params", "flops_per_sample", "widths", "in_features", "out_features", "activation", "opset",
    "parity", "precision", "accuracy", "within_budget", "calibration",
}
PARITY_KEYS = {"passed", "batches", "max_abs_error", "max_rel_error", "atol", "rtol", "weight_shapes"}


def _save(path: Path, spec: MLPSpec, variant: str, torch_seed: int, **metadata: str) -> Path:
    torch.manual_seed(torch_seed)
    network = mlp_network(spec)
    if variant == "magnitude":  # zero-filled like magnitude pruning: same shapes, half the hidden weights zero
        with torch.no_grad():
            for layer in linear_layers(network.module)[:-1]:
                layer.weight[:, ::2] = 0.0
    return save_checkpoint(path, network, {"variant": variant, **metadata})


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """dense + structured in every default format, then magnitude in ONNX only (a second run into the same DIR)."""
    src = tmp_path_factory.mktemp("src")
    out = tmp_path_factory.mktemp("artifacts")
    dense = _save(src / "dense.safetensors", DENSE, "dense", 0, dataset="stokes2d", seed="0")
    structured = _save(src / "structured.safetensors", STRUCTURED, "structured", 1)
    magnitude = _save(src / "magnitude.safetensors", DENSE, "magnitude", 2)
    export_checkpoints([dense, structured], out, parse_formats(None))
    export_checkpoints([magnitude], out, parse_formats("onnx"))
    return out


def _records(out: Path) -> list[dict]:
    return json.loads((out / MANIFEST_NAME).read_text())["artifacts"]


def test_manifest_lists_every_artifact_with_the_contract_keys(exported):
    records = _records(exported)
    assert [(r["model"], r["format"]) for r in records] == [
        *((m, f) for m in ("dense", "structured") for f in default_formats()), ("magnitude", "onnx")]
    for r in records:
        assert set(r) >= CONTRACT_KEYS and set(r["parity"]) >= PARITY_KEYS, r
        path = exported / r["file"]
        assert r["file"] == r["model"] + get_format(r["format"]).extension
        assert r["bytes"] == path.stat().st_size and r["sha256"] == sha256_of(path)
        assert r["checkpoint_sha256"] == sha256_of(exported / r["checkpoint"])  # the copy makes DIR self-contained
        assert r["parity"]["passed"] and r["parity"]["batches"] == [1, 7, 4096]
        assert (r["opset"] == 18) == get_format(r["format"]).uses_opset
    assert len(read_manifest(exported).artifacts) == len(records)  # verifies every sha256


def test_structured_widths_are_visible_in_every_artifact(exported):
    by_key = {(r["model"], r["format"]): r for r in _records(exported)}
    for name in default_formats():
        fmt = get_format(name)
        structured, dense = by_key["structured", name], by_key["dense", name]
        shapes = fmt.weight_shapes(exported / structured["file"])
        assert shapes == STRUCTURED.layer_shapes == [tuple(s) for s in structured["parity"]["weight_shapes"]]
        assert fmt.weight_shapes(exported / dense["file"]) == DENSE.layer_shapes
        assert structured["widths"] == [20, 12] and structured["params"] < dense["params"]
        assert structured["bytes"] < dense["bytes"], name


def test_magnitude_exports_honestly_as_dense_shapes(exported):
    record = next(r for r in _records(exported) if r["model"] == "magnitude")
    assert record["variant"] == "magnitude"
    assert get_format("onnx").weight_shapes(exported / record["file"]) == DENSE.layer_shapes
    assert record["nonzero_params"] < record["params"] == DENSE.params


def test_every_artifact_reproduces_eager_pytorch_in_its_own_runtime(exported):
    x = np.random.default_rng(7).uniform(-1, 1, (5, 18)).astype(np.float32)
    for r in _records(exported):
        model = load_checkpoint(exported / r["checkpoint"]).network.module
        output = load_artifact(exported / r["file"])(x)
        error = np.abs(output - eager(model, x)).max()
        if r["format"] == "onnx-int8":
            assert r["parity"]["criterion"] == "recorded" and r["parity"]["atol"] is None
            assert r["parity"]["max_abs_error"] > 0 and 0 < error < 0.5  # lossy, recorded, but still the model
        else:
            assert error < 1e-5, (r["file"], error)


def test_int8_records_accuracy_only_on_the_builtin_task(exported):
    by_key = {(r["model"], r["format"]): r for r in _records(exported)}
    measured = by_key["dense", "onnx-int8"]["accuracy"]
    assert measured["dataset"] == "stokes2d" and measured["split"] == "val" and measured["max_r2_drop"] == 0.01
    assert measured["val_r2_delta"] == pytest.approx(measured["val_r2"] - measured["val_r2_reference"])
    assert measured["val_r2"] != measured["val_r2_reference"]
    assert by_key["dense", "onnx-int8"]["within_budget"] == (measured["val_r2_delta"] >= -0.01)
    assert measured["residual_rms"] is None and "derivatives" in measured["residual_note"]
    assert measured["residual_rms_reference"] > 0  # the float32 PyTorch model's, by autograd
    assert by_key["structured", "onnx-int8"]["accuracy"] is None  # no dataset in its metadata: nothing to judge on
    assert by_key["structured", "onnx-int8"]["within_budget"] is None
    assert by_key["dense", "onnx"]["accuracy"] is None and by_key["dense", "onnx"]["within_budget"] is True


def test_onnx_artifacts_are_single_checked_files_with_a_dynamic_batch(exported):
    assert not [p for p in exported.iterdir() if p.name.endswith(".data") or p.name.endswith(".partial")]
    for path in exported.glob("*.onnx"):
        onnx.checker.check_model(str(path), full_check=True)
        graph = onnx.load(str(path)).graph
        assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in graph.initializer)
        batch, width = graph.input[0].type.tensor_type.shape.dim
        assert batch.dim_param and not batch.dim_value and width.dim_value == 18


def test_wrong_input_width_is_a_clear_error_in_every_runtime(exported):
    for path in sorted(exported.glob("structured.*")):
        if path.suffix == ".safetensors":
            continue
        artifact = load_artifact(path)
        with pytest.raises(UserError, match=r"expects 18 input features per row, got 17"):
            artifact(np.zeros((3, 17), np.float32))
        with pytest.raises(UserError, match="expects 18"):
            artifact(np.zeros(18, np.float32))


@pytest.mark.parametrize("suffix, loader", [
    (".onnx", load_onnx_session), (".torchscript.pt", load_torchscript), (".pt2", load_exported_program)])
def test_truncated_or_corrupt_artifacts_are_user_errors(exported, tmp_path, suffix, loader):
    data = (exported / f"dense{suffix}").read_bytes()
    for name, content in (("truncated", data[: len(data) // 2]), ("garbage", b"not a model at all")):
        bad = tmp_path / f"{name}{suffix}"
        bad.write_bytes(content)
        with pytest.raises(UserError, match="truncated or corrupt") as info:
            loader(bad)
        assert "\n" not in str(info.value)
        with pytest.raises(UserError):
            load_artifact(bad)
    with pytest.raises(UserError, match="no such"):
        loader(tmp_path / f"missing{suffix}")


def test_exported_program_that_would_unpickle_is_refused(exported, tmp_path):
    source, bad = exported / "dense.pt2", tmp_path / "pickled.pt2"
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                next(iter(config["config"].values()))["use_pickle"] = True
                data = json.dumps(config).encode()
            zout.writestr(item, data)
    with pytest.raises(UserError, match="would be unpickled"):
        load_exported_program(bad)


def test_format_names_are_checked(exported):
    assert [f.name for f in parse_formats("onnx, torchscript, onnx")] == ["onnx", "torchscript"]  # as given, once each
    assert "aoti" not in default_formats()
    with pytest.raises(UserError, match=r"unknown format 'tflite'.*torchscript"):
        parse_formats("onnx,tflite")
    with pytest.raises(UserError, match="empty"):
        parse_formats(" , ")


def _structured(tmp_path: Path) -> tuple:
    path = _save(tmp_path / "s.safetensors", STRUCTURED, "structured", 3)
    return load_checkpoint(path), path


def test_parity_failure_leaves_no_file_under_its_final_name(tmp_path):
    checkpoint, path = _structured(tmp_path)

    def wrong_weights(network, target, opset, calibration):  # a real ONNX file of a slightly different model
        broken = network.with_module(copy.deepcopy(network.module))
        with torch.no_grad():
            linear_layers(broken.module)[0].bias.add_(1e-3)
        write_onnx(broken, target, opset)

    fmt = dataclasses.replace(get_format("onnx"), write=wrong_weights)
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"s \[onnx\]: parity failed: max abs error") as info:
        export_one(checkpoint, "s", fmt, out, 18, path)
    assert "\n" not in str(info.value)
    assert list(out.iterdir()) == []


def test_an_unpruned_export_of_a_pruned_checkpoint_is_caught(tmp_path):
    checkpoint, path = _structured(tmp_path)
    fmt = dataclasses.replace(
        get_format("torchscript"), write=lambda network, target, opset, calibration: get_format("torchscript").write(
            mlp_network(DENSE), target, opset, calibration))
    with pytest.raises(UserError, match="weight shapes"):
        export_one(checkpoint, "s", fmt, tmp_path / "out", 18, path)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("failure, message", [(RuntimeError("exporter blew up\nsecond line"), "exporter blew up"),
                                               (KeyboardInterrupt(), None)])
def test_a_crash_or_interrupt_mid_write_leaves_nothing(tmp_path, failure, message):
    checkpoint, path = _structured(tmp_path)

    def half_then_fail(network, target, opset, calibration):
        target.write_bytes(b"PK\x03\x04 half an archive")
        raise failure

    fmt = dataclasses.replace(get_format("torchscript"), write=half_then_fail)
    out = tmp_path / "out"
    if message is None:
        with pytest.raises(KeyboardInterrupt):
            export_one(checkpoint, "s", fmt, out, 18, path)
    else:
        with pytest.raises(UserError, match=r"^s: torchscript export failed \(RuntimeError: exporter blew up\)$"):
            export_one(checkpoint, "s", fmt, out, 18, path)
    assert list(out.iterdir()) == []
