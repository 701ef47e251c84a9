"""AOTInductor: the exporter's ahead-of-time compiled package (`.aoti.pt2`), where one was built.

CPU only: a package is compiled for one device, and the exporter builds it on the CPU.
"""
from __future__ import annotations

import torch

from spinn_export.bench.backends import Backend, Source, TorchRunner, register, require_path


def load(source: Source, threads: int) -> TorchRunner:
    from spinn_export.export.formats import quiet
    from spinn_export.bench.timing import fix_threads

    threads = fix_threads(threads)
    path = require_path(source, "aoti-cpu", "AOTInductor (.aoti.pt2)")
    with quiet():
        runner = torch._inductor.aoti_load_package(str(path))
    return TorchRunner(runner, "aoti-cpu", "cpu", "aoti", threads)


register(Backend("aoti-cpu", "cpu", "aoti", load, lambda: None))
