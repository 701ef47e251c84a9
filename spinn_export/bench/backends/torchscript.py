"""TorchScript: the exporter's traced and frozen archive (`.torchscript.pt`)."""
from __future__ import annotations

from spinn_export.bench.backends import Backend, Loader, cuda_unavailable_reason, torch_loader
from spinn_export.export.formats.torchscript import load_torchscript
from spinn_export.runtimes import TORCH


def _loader(device: str) -> Loader:
    return torch_loader("torchscript", "torchscript", device, load_torchscript, "TorchScript")


TORCHSCRIPT_CPU = Backend("torchscript-cpu", "cpu", "torchscript", _loader("cpu"),
                          description="TorchScript interpreter", runtime=TORCH)
TORCHSCRIPT_CUDA = Backend("torchscript-cuda", "cuda", "torchscript", _loader("cuda"), cuda_unavailable_reason,
                           description="TorchScript interpreter on the GPU", runtime=TORCH)
