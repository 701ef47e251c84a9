"""TorchScript: the exporter's traced and frozen archive (`.torchscript.pt`)."""
from __future__ import annotations

from spinn_export.bench.backends import Backend, Source, TorchRunner, cuda_unavailable_reason, register, require_path


def _loader(device: str):
    def load(source: Source, threads: int) -> TorchRunner:
        from spinn_export.export.formats import load_torchscript
        from spinn_export.bench.timing import fix_threads

        module = load_torchscript(require_path(source, f"torchscript-{device}", "TorchScript"))
        return TorchRunner(module.to(device), f"torchscript-{device}", device, "torchscript", fix_threads(threads))

    return load


register(
    Backend("torchscript-cpu", "cpu", "torchscript", _loader("cpu"), lambda: None),
    Backend("torchscript-cuda", "cuda", "torchscript", _loader("cuda"), cuda_unavailable_reason),
)
