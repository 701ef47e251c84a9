"""TorchScript: the exporter's traced and frozen archive (`.torchscript.pt`)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from spinn_export.bench.backends import Backend, BackendConfig, Source, TorchRunner, cuda_unavailable_reason, require_path

if TYPE_CHECKING:
    import torch


def load_on(path: Path, device: str) -> torch.jit.ScriptModule:
    """The archive with every tensor placed on `device` as it is read.

    The exporter freezes the module, which turns its weights into constants of the graph: a frozen
    module has no parameters or buffers, so `.to(device)` would move nothing and leave every weight on
    the CPU. Only `map_location` places them.
    """
    import torch

    from spinn_export.export.formats import read_artifact

    return read_artifact(path, "TorchScript", lambda file: torch.jit.load(file, map_location=device)).eval()


def _loader(device: str):  # type: ignore[no-untyped-def]
    def load(source: Source, threads: int, config: BackendConfig) -> TorchRunner:
        from spinn_export.bench.timing import fix_threads

        module = load_on(require_path(source, f"torchscript-{device}", "TorchScript"), device)
        return TorchRunner(module, f"torchscript-{device}", device, "torchscript", fix_threads(threads))

    return load


TORCHSCRIPT_CPU = Backend("torchscript-cpu", "cpu", "torchscript", _loader("cpu"), description="TorchScript interpreter")
TORCHSCRIPT_CUDA = Backend("torchscript-cuda", "cuda", "torchscript", _loader("cuda"), cuda_unavailable_reason,
                           description="TorchScript interpreter on the GPU")
