"""torch.export: the exporter's `.pt2` program, run through its unlifted module."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from spinn_export.bench.backends import Backend, Loader, cuda_unavailable_reason, torch_loader
from spinn_export.export.formats.exported_program import load_exported_program
from spinn_export.runtimes import TORCH


def _open(path: Path, device: str) -> nn.Module:
    return load_exported_program(path).module().to(device)


def _loader(device: str) -> Loader:
    return torch_loader("exported-program", "torch.export", device, _open, "torch.export (.pt2)")


EXPORTED_PROGRAM_CPU = Backend("exported-program-cpu", "cpu", "exported-program", _loader("cpu"),
                               description="torch.export program (unlifted module)", runtime=TORCH)
EXPORTED_PROGRAM_CUDA = Backend("exported-program-cuda", "cuda", "exported-program", _loader("cuda"),
                                cuda_unavailable_reason, description="torch.export program on the GPU", runtime=TORCH)
