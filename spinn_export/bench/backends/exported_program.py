"""torch.export: the exporter's `.pt2` program, run through its unlifted module."""
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
        from spinn_export.export.formats.exported_program import load_exported_program

        program = load_exported_program(require_path(source, f"exported-program-{device}", "torch.export (.pt2)"))
        module = program.module().to(device)
        return TorchRunner(module, f"exported-program-{device}", device, "torch.export", fix_threads(threads))

    return load


EXPORTED_PROGRAM_CPU = Backend("exported-program-cpu", "cpu", "exported-program", _loader("cpu"),
                               description="torch.export program (unlifted module)", runtime=TORCH)
EXPORTED_PROGRAM_CUDA = Backend("exported-program-cuda", "cuda", "exported-program", _loader("cuda"),
                                cuda_unavailable_reason, description="torch.export program on the GPU", runtime=TORCH)
