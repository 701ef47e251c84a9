"""Eager PyTorch: the reference every other backend is checked against. Runs sparse-CSR modules too."""
from __future__ import annotations

from spinn_export.bench.backends import (
    CHECKPOINT_FORMAT,
    Backend,
    BackendConfig,
    Source,
    TorchRunner,
    as_module,
    cuda_unavailable_reason,
    torch_cpu_precisions,
)
from spinn_export.runtimes import TORCH


def _loader(device: str):  # type: ignore[no-untyped-def]
    def load(source: Source, threads: int, config: BackendConfig) -> TorchRunner:
        from spinn_export.bench.timing import fix_threads

        module = as_module(source).to(device)
        return TorchRunner(module, f"eager-{device}", device, "eager", fix_threads(threads))

    return load


_RUNS, _NOTE = torch_cpu_precisions()
EAGER_CPU = Backend("eager-cpu", "cpu", CHECKPOINT_FORMAT, _loader("cpu"), sparse=True,
                    precisions=_RUNS, description=f"eager PyTorch (the reference){_NOTE}", runtime=TORCH)
EAGER_CUDA = Backend("eager-cuda", "cuda", CHECKPOINT_FORMAT, _loader("cuda"), cuda_unavailable_reason, sparse=True,
                     description="eager PyTorch on the GPU", runtime=TORCH)
