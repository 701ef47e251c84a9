"""Eager PyTorch: the reference every other backend is checked against. Runs sparse-CSR modules too."""
from __future__ import annotations

from spinn_export.bench.backends import (
    CHECKPOINT_FORMAT,
    Backend,
    Loader,
    as_module,
    cuda_unavailable_reason,
    torch_cpu_precisions,
    torch_loader,
)
from spinn_export.runtimes import TORCH


def _loader(device: str) -> Loader:
    return torch_loader("eager", "eager", device, lambda source, on: as_module(source).to(on))


_RUNS, _NOTE = torch_cpu_precisions()
EAGER_CPU = Backend("eager-cpu", "cpu", CHECKPOINT_FORMAT, _loader("cpu"), sparse=True,
                    precisions=_RUNS, description=f"eager PyTorch (the reference){_NOTE}", runtime=TORCH)
EAGER_CUDA = Backend("eager-cuda", "cuda", CHECKPOINT_FORMAT, _loader("cuda"), cuda_unavailable_reason, sparse=True,
                     description="eager PyTorch on the GPU", runtime=TORCH)
