"""The default executor: worker processes on this machine (`concurrent.futures.ProcessPoolExecutor`), no extra
dependency.

The workers are forked from a server that has only imported the libraries (`bench.timing.fresh_process_context`),
not from this process: they inherit no loaded model, no ONNX Runtime thread pool and no CUDA context, and start
in a fraction of a second instead of re-importing torch.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Iterator

from spinn_export.pipeline.executors import Executor


@contextlib.contextmanager
def _start(workers: int, address: str | None) -> Iterator[concurrent.futures.Executor]:
    # start-up: torch (through bench.timing) only when the pool starts, not to list the executors
    from spinn_export.bench.timing import fresh_process_context

    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=fresh_process_context()) as pool:
        yield pool


LOCAL = Executor("local", "worker processes on this machine (concurrent.futures)", _start)
