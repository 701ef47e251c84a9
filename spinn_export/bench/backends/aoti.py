"""AOTInductor: the exporter's ahead-of-time compiled package (`.aoti.pt2`), where one was built.

CPU only: a package is compiled for one device, and the exporter builds it on the CPU. Slow: its
artifact takes minutes to build, so it runs only when asked for by name.
"""
from __future__ import annotations

from spinn_export.bench.backends import Backend, BackendConfig, Source, TorchRunner, require_path
from spinn_export.runtimes import TORCH


def load(source: Source, threads: int, config: BackendConfig) -> TorchRunner:
    from spinn_export.bench.timing import fix_threads
    from spinn_export.export.formats.aoti import load_aoti

    threads = fix_threads(threads)
    runner = load_aoti(require_path(source, "aoti-cpu", "AOTInductor (.aoti.pt2)"))
    return TorchRunner(runner, "aoti-cpu", "cpu", "aoti", threads)


AOTI_CPU = Backend("aoti-cpu", "cpu", "aoti", load, slow=True, description="AOTInductor package (compiled C++)",
                  runtime=TORCH)
