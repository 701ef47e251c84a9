"""bf16 in PyTorch (`torch-bf16`): bfloat16 weights that load as bfloat16 (never silently widened), run behind a
float32 interface on the PyTorch backends, with their error and accuracy recorded at export; offered only where
the CPU has native bf16 (elsewhere emulated, slower than float32), which is decided from the CPU's flags."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from spinn_export import hardware
from spinn_export.bench.backends import get_backend, sample_input, torch_cpu_precisions
from spinn_export.bench.variants import Variant, refs_from_manifest, verify_runner
from spinn_export.errors import UserError
from spinn_export.export.exporter import export_checkpoints
from spinn_export.export.formats import get_format, parse_formats
from spinn_export.export.formats.torch_bf16 import TORCH_BF16
from spinn_export.model.checkpoint import FORMAT_KEY, SPEC_KEY, load_checkpoint, save_checkpoint
from spinn_export.model.mlp import mlp_network
from spinn_export.model.spec import MLPSpec

from .conftest import linear_layers

SPEC = MLPSpec(18, (64, 64), 2)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint named as trained on the built-in task, exported as float32 ONNX and as torch-bf16 (the format is
    given directly: `--formats` would refuse it on a CPU without native bf16)."""
    directory = tmp_path_factory.mktemp("torch-bf16")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(directory / "dense.safetensors", mlp_network(SPEC),
                                 {"variant": "dense", "dataset": "stokes2d", "seed": "0"})
    export_checkpoints([checkpoint], directory / "out", (get_format("onnx"), TORCH_BF16))
    return directory / "out"


def test_bf16_weights_load_as_bf16_and_compute_behind_a_float32_interface(exported: Path) -> None:
    model = load_checkpoint(exported / "dense.bf16.safetensors").network.module
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    reference = load_checkpoint(exported / "dense.safetensors").network.module
    x = sample_input(256, SPEC.in_features)
    predicted = TORCH_BF16.load(exported / "dense.bf16.safetensors")(x)
    expected = reference(torch.from_numpy(x)).detach().numpy()
    assert predicted.dtype == np.float32 and predicted.shape == expected.shape
    error = np.abs(predicted - expected).max()
    assert 1e-5 < error < 5e-2  # bf16 rounding: not float32, not broken
    assert TORCH_BF16.weight_shapes(exported / "dense.bf16.safetensors") == list(SPEC.layer_shapes)


def test_the_manifest_records_its_error_and_accuracy_and_eager_runs_it_within_them(exported: Path) -> None:
    refs = {r.name: r for r in refs_from_manifest(exported)}
    ref = refs["dense-bf16"]
    assert ref.variant == Variant("dense", "bf16") and ref.file("checkpoint").name == "dense.bf16.safetensors"
    assert 0 < ref.recorded_error < 5e-2
    eager = get_backend("eager-cpu")
    runner = eager.load(ref.file("checkpoint"), 1)  # the backend's own loader, whatever this CPU offers
    parity = verify_runner(eager, ref, runner)  # held to twice the error recorded at export
    assert 0 < parity.max_abs_error <= 2 * ref.recorded_error
    assert runner.infer(sample_input(4, SPEC.in_features)).dtype == np.float32


def test_bf16_is_offered_only_where_the_cpu_has_it_natively(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    runs, note = torch_cpu_precisions()
    assert runs == ("fp32",) and note.startswith("; no bf16 here: no amx_bf16 / avx512_bf16")
    assert "emulate bf16" in TORCH_BF16.available()
    with pytest.raises(UserError, match="format 'torch-bf16' is unavailable here: no amx_bf16 / avx512_bf16"):
        parse_formats("torch-bf16")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "amx_bf16"}))
    assert torch_cpu_precisions() == (("fp32", "bf16"), "") and TORCH_BF16.available() is None


def test_a_checkpoint_of_mixed_dtypes_is_one_line(tmp_path: Path) -> None:
    model = mlp_network(SPEC).module
    tensors = {}
    for index, layer in enumerate(linear_layers(model)):
        tensors[f"linear{index}.weight"] = layer.weight.detach().to(torch.bfloat16 if index else torch.float32)
        tensors[f"linear{index}.bias"] = layer.bias.detach().float()
    path = tmp_path / "mixed.safetensors"
    save_file(tensors, str(path), metadata={SPEC_KEY: SPEC.to_json(), FORMAT_KEY: "1"})
    with pytest.raises(UserError, match="not all float32 or all bfloat16; the file is damaged"):
        load_checkpoint(path)
