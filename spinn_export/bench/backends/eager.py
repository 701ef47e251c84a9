"""Eager PyTorch: the reference every other backend is checked against. Runs sparse-CSR modules too."""
from __future__ import annotations

from spinn_export.bench.backends import Backend, Source, TorchRunner, as_module, cuda_unavailable_reason, register


def _loader(device: str):
    def load(source: Source, threads: int) -> TorchRunner:
        from spinn_export.bench.timing import fix_threads

        module = as_module(source).to(device)
        return TorchRunner(module, f"eager-{device}", device, "eager", fix_threads(threads))

    return load


register(
    Backend("eager-cpu", "cpu", "checkpoint", _loader("cpu"), lambda: None, sparse=True),
    Backend("eager-cuda", "cuda", "checkpoint", _loader("cuda"), cuda_unavailable_reason, sparse=True),
)
