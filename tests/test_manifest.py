"""Reading a manifest back: the benchmark suite trusts it only if every file is what was verified."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from spinn_export.errors import UserError
from spinn_export.export.exporter import export_checkpoints
from spinn_export.export.formats import parse_formats
from spinn_export.export.manifest import MANIFEST_NAME, read_manifest
from spinn_export.model.checkpoint import save_checkpoint
from spinn_export.model.mlp import mlp_network
from spinn_export.model.spec import MLPSpec

from .conftest import Pipeline

SPEC = MLPSpec(18, (8, 4), 2)


@pytest.fixture
def exported(tmp_path):
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "tiny.safetensors", mlp_network(SPEC), {"variant": "dense"})
    out = tmp_path / "out"
    export_checkpoints([path], out, parse_formats("torchscript"))
    return out


def test_round_trip(exported):
    manifest = read_manifest(exported)
    record = manifest.find("tiny", "torchscript")
    assert record is not None and record.widths == (8, 4) and record.variant == "dense" and record.opset is None
    # it verifies onnx-bf16, so it is recorded where present
    optional = {library for library in ("openvino", "nncf") if importlib.util.find_spec(library) is not None}
    expected = {"torch", "numpy", "onnx", "onnxruntime", "python"} | optional
    assert set(manifest.versions) == expected
    assert sorted(p.name for p in exported.iterdir()) == [MANIFEST_NAME, "tiny.safetensors", "tiny.torchscript.pt"]


def test_a_changed_artifact_is_refused(exported):
    (exported / "tiny.torchscript.pt").write_bytes(b"tampered")
    with pytest.raises(UserError, match="sha256 mismatch"):
        read_manifest(exported)
    assert read_manifest(exported, verify=False).artifacts  # still readable when asked not to verify


def test_older_manifests_read_their_accuracy_delta_as_accuracy(exported):
    data = json.loads((exported / MANIFEST_NAME).read_text())
    data["schema"] = 1  # the first releases' schema-1 manifest
    del data["version"]
    record = data["artifacts"][0]
    for key in ("accuracy", "within_budget", "calibration"):
        del record[key]
    record["accuracy_delta"] = {"dataset": "stokes2d", "split": "val", "r2_reference": 0.99, "r2": 0.98,
                                "delta_r2": -0.01, "rel_l2_reference": 0.1, "rel_l2": 0.11}
    (exported / MANIFEST_NAME).write_text(json.dumps(data))
    read = read_manifest(exported).artifacts[0]
    assert read.accuracy["val_r2"] == 0.98 and read.accuracy["val_r2_delta"] == -0.01
    assert read.accuracy["residual_rms"] is None and read.within_budget is None  # no budget was recorded then


@pytest.mark.parametrize("content, message", [("{not json", "not a valid manifest"),
                                              ('{"schema": 99}', "schema 99"),
                                              ('{"schema": 1, "versions": {}}', "not a valid manifest")])
def test_corrupt_manifest_is_a_user_error(exported, content, message):
    (exported / MANIFEST_NAME).write_text(content)
    with pytest.raises(UserError, match=message):
        read_manifest(exported)


def test_missing_manifest_says_what_to_run(tmp_path):
    with pytest.raises(UserError, match="spinn-export export"):
        read_manifest(tmp_path)


def test_checkpoints_with_the_same_stem_are_refused(tmp_path):
    paths = []
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        paths.append(save_checkpoint(tmp_path / sub / "m.safetensors", mlp_network(SPEC), {"variant": "dense"}))
    with pytest.raises(UserError, match="both named 'm'"):
        export_checkpoints(paths, tmp_path / "out", parse_formats("torchscript"))
    assert not (tmp_path / "out").exists()


def test_unknown_variant_is_refused_before_writing(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", mlp_network(SPEC), {"variant": "sparse"})
    with pytest.raises(UserError, match="unknown variant 'sparse'"):
        export_checkpoints([path], tmp_path / "out", parse_formats("torchscript"))
    assert not (tmp_path / "out").exists()


def test_manifest_json_is_the_documented_shape(exported):
    data = json.loads((exported / MANIFEST_NAME).read_text())
    assert list(data) == ["schema", "version", "versions", "artifacts", "unavailable"]
    assert (data["schema"], data["version"]) == ("spinn-export.manifest", 2)


def test_reading_and_verifying_a_manifest_and_reporting_need_no_torch(pipeline: Pipeline, tmp_path):
    """The report stage and manifest checks run where torch cannot even be imported."""
    import subprocess
    import sys

    script = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        "from spinn_export.export.manifest import read_manifest\n"
        "from spinn_export.report.writer import build_report\n"
        f"manifest = read_manifest({str(pipeline.manifest.parent)!r})\n"
        f"build_report([{str(pipeline.ort_json)!r}], {str(pipeline.manifest)!r}, [{str(pipeline.structured_dir)!r}], "
        f"{str(tmp_path / 'report')!r})\n"
        "print(len(manifest.artifacts))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.strip()) == 3 and (tmp_path / "report" / "report.html").is_file()
