"""torch.export: the exporter's `.pt2` program, run through its unlifted module."""
from __future__ import annotations

from spinn_export.bench.backends import Backend, Source, TorchRunner, cuda_unavailable_reason, register, require_path


def _loader(device: str):
    def load(source: Source, threads: int) -> TorchRunner:
        from spinn_export.export.formats import load_exported_program
        from spinn_export.bench.timing import fix_threads

        program = load_exported_program(require_path(source, f"exported-program-{device}", "torch.export (.pt2)"))
        module = program.module().to(device)
        return TorchRunner(module, f"exported-program-{device}", device, "torch.export", fix_threads(threads))

    return load


register(
    Backend("exported-program-cpu", "cpu", "exported-program", _loader("cpu"), lambda: None),
    Backend("exported-program-cuda", "cuda", "exported-program", _loader("cuda"), cuda_unavailable_reason),
)
