"""Timing that holds on a shared machine and on a GPU: fixed threads, warm-up, calibrated blocks.

A "call" here is a zero-argument function that runs one complete inference and returns only when
the result exists: the runners synchronise the device inside it (`torch.cuda.synchronize`, ONNX
Runtime's IOBinding output sync), so host time around it is the true latency on a GPU too.
"""
from __future__ import annotations

import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any, TypeVar

import torch

from spinn_export.errors import UserError
from spinn_export.hardware import cpu_model, gpu_info
from spinn_export.runtimes import library_versions
from spinn_export.runtimes import onnxruntime as ort_runtime

Call = Callable[[], object]
Clock = Callable[[], float]
T = TypeVar("T")

# Imported once by the fork server, so each fresh process starts in 0.03 s instead of a 2.6 s spawn; none of
# them creates a thread pool, a session or a model on import. A module that is not installed is skipped.
FORKSERVER_PRELOAD = ["torch", "onnxruntime", "spinn_export.bench.backends", "spinn_export.bench.variants"]


def default_threads() -> int:
    """Physical cores this process may run on (SMT siblings count once): one thread per core."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def fix_threads(threads: int | None = None) -> int:
    """Fix the intra-op thread count for this process (torch now, ONNX Runtime's pool when first used).

    Asking for a different count after ONNX Runtime's global pool exists is an error rather than a
    silent mismatch between the recorded and the real count.
    """
    threads = default_threads() if threads is None else int(threads)
    if threads < 1:
        raise UserError(f"thread count must be a positive integer, got {threads}")
    ort_runtime.require_pool_size(threads)
    torch.set_num_threads(threads)
    return threads


def machine_info() -> dict[str, Any]:
    """What every timing was taken on, added to pytest-benchmark's machine_info (docs/ARCHITECTURE.md)."""
    return {"cpu_model": cpu_model(), **gpu_info(), "physical_cores": default_threads(),
            "torch_threads": torch.get_num_threads(), **library_versions()}


def fresh_process_context() -> BaseContext:
    """Processes for measurements that must not inherit this one's state (loaded models, warm arenas, ONNX
    Runtime's global pool): forked from a server that has only imported the libraries (`FORKSERVER_PRELOAD`),
    or spawned where there is no fork server (Windows)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(FORKSERVER_PRELOAD)
    return context


def in_fresh_processes(function: Callable[[], T], processes: int) -> list[T]:
    """`function()` in `processes` fresh processes (`fresh_process_context`), one at a time (side by side they would
    compete for the cores being measured): each process's result, in order. `function` must be picklable (a
    module-level function or a functools.partial of one)."""

    context, results = fresh_process_context(), []
    for _ in range(processes):
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            results.append(pool.submit(function).result())
    return results


def time_block(call: Call, calls: int, clock: Clock = time.perf_counter) -> float:
    """Seconds per call over `calls` back-to-back calls."""
    start = clock()
    for _ in range(calls):
        call()
    return (clock() - start) / calls


def warm_up(call: Call, min_calls: int = 3, min_seconds: float = 0.05, clock: Clock = time.perf_counter) -> float:
    """Run until caches, allocators and lazy initialisation have settled; return the median call time after the
    first (what a round budget is sized on: one call caught by a neighbour's burst must not shrink it tenfold)."""
    start = clock()
    times: list[float] = []
    while len(times) < min_calls or clock() - start < min_seconds:
        times.append(time_block(call, 1, clock))
    return statistics.median(times[1:])


def calibrate(call: Call, block_seconds: float, clock: Clock = time.perf_counter) -> int:
    """Calls per block so that one block takes about `block_seconds` (at least one call)."""
    per_call = min(time_block(call, 1, clock) for _ in range(3))
    calls = 1
    while per_call * calls < block_seconds / 4 and calls < 1_000_000:
        calls *= 4
        per_call = time_block(call, calls, clock)
    return max(1, round(block_seconds / max(per_call, 1e-9)))
