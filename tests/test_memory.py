"""Peak memory in a fresh process: it sees the weights and every activation, and grows with the batch."""
from __future__ import annotations

import sys

import pytest
import torch

from spinn_export.bench.backends import get_backend
from spinn_export.bench.memory import kernel_peak_unavailable, peak_memory
from spinn_export.bench.variants import refs_from_manifest
from spinn_export.export.exporter import export_checkpoints
from spinn_export.export.formats import parse_formats
from spinn_export.model.checkpoint import save_checkpoint
from spinn_export.model.mlp import mlp_network
from spinn_export.model.spec import MLPSpec

WIDE = MLPSpec(18, (1024, 1024), 2)  # 4 MiB of float32 weights in the middle layer
BATCH = 4096  # one 4096 x 1024 float32 activation is 16 MiB
MIB = 2**20

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or kernel_peak_unavailable() is not None,
                                reason=f"the kernel's resettable peak RSS is Linux-only: {kernel_peak_unavailable()}")


@pytest.fixture(scope="module")
def wide_ref(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("memory")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(directory / "dense.safetensors", mlp_network(WIDE), {"variant": "dense"})
    export_checkpoints([checkpoint], directory / "export", parse_formats("onnx"))
    (ref,) = [r for r in refs_from_manifest(directory / "export") if r.name == "dense"]
    return ref


# eager in the fast lane; ONNX Runtime and compile (it builds each shape first) take seconds more each
@pytest.mark.parametrize("backend", ["eager-cpu", pytest.param("ort-cpu", marks=pytest.mark.slow),
                                     pytest.param("compile-cpu", marks=pytest.mark.slow)])
def test_peak_covers_weights_and_activations_and_grows_with_the_batch(wide_ref, backend: str) -> None:
    measured = peak_memory(get_backend(backend), wide_ref, [BATCH, 1], threads=1)
    assert measured.method == "VmHWM" and measured.reason is None
    assert list(measured.peak_bytes) == [1, BATCH]  # ascending: a small batch is not charged for a larger one's buffers
    small, large = measured.peak_bytes[1], measured.peak_bytes[BATCH]
    assert small >= 4 * MIB  # at least the weights: the model's own memory, not the interpreter's
    assert large - small >= 16 * MIB  # at least one full-batch activation more

