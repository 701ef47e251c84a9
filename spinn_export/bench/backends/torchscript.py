"""TorchScript: the exporter's traced and frozen archive (`.torchscript.pt`)."""
from __future__ import annotations

from spinn_export.bench.backends import (
    Backend,
    BackendConfig,
    Source,
    TorchRunner,
    cuda_unavailable_reason,
    require_path,
)
from spinn_export.runtimes import TORCH


def _loader(device: str):  # type: ignore[no-untyped-def]
    def load(source: Source, threads: int, config: BackendConfig) -> TorchRunner:
        from spinn_export.bench.timing import fix_threads
        from spinn_export.export.formats.torchscript import load_torchscript

        module = load_torchscript(require_path(source, f"torchscript-{device}", "TorchScript"), device)
        return TorchRunner(module, f"torchscript-{device}", device, "torchscript", fix_threads(threads))

    return load


TORCHSCRIPT_CPU = Backend("torchscript-cpu", "cpu", "torchscript", _loader("cpu"),
                          description="TorchScript interpreter", runtime=TORCH)
TORCHSCRIPT_CUDA = Backend("torchscript-cuda", "cuda", "torchscript", _loader("cuda"), cuda_unavailable_reason,
                           description="TorchScript interpreter on the GPU", runtime=TORCH)
