"""Peak memory of one model on one backend, per batch size, measured in a fresh process.

Sampling the resident size while a model runs misses short spikes (an activation buffer that lives
for a millisecond), so on the CPU this reads the kernel's own high-water mark (`VmHWM`), which
records every spike. The benchmark process cannot measure itself: it has loaded every model and its
runtimes keep arenas warm, so a fresh process loads just this model. The figure is the high-water
mark during inference minus the resident size before the model was loaded: weights, the runtime's
session and arenas, and activations, without the interpreter and the libraries, which every variant
shares. Batches run in increasing order, and the high-water mark is reset (`/proc/self/clear_refs`)
before each, so a batch is not charged for a larger one. The model is checked against eager PyTorch
after its measurement rather than before: the check runs batches up to 4096, whose buffers the
runtimes would otherwise keep and charge to every smaller batch.

On CUDA the figure is `torch.cuda.max_memory_allocated` for runtimes that allocate through PyTorch;
ONNX Runtime's CUDA arena is invisible to it, so that case says "not measured" rather than 0.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from spinn_export.bench.backends import Backend, BackendConfig, get_backend, sample_input
from spinn_export.bench.timing import fix_threads, fresh_process_context
from spinn_export.bench.variants import ModelRef, verify_runner

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
RESET_PEAK = "5"  # clear_refs: "reset the peak resident set size" (Linux >= 4.0, proc(5))
CALLS_PER_BATCH = 3
TORCH_FORMATS = ("checkpoint", "torchscript", "exported-program", "aoti")


@dataclass(frozen=True)
class PeakMemory:
    """Peak bytes per batch (None: not measured, and `reason` says why)."""

    method: str
    peak_bytes: dict[int, int | None]
    reason: str | None = None


def _status_bytes(field: str) -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise RuntimeError(f"unexpected unit {unit!r} for {field} in {STATUS}")
            return int(value) * 1024
    raise RuntimeError(f"{field} is not in {STATUS}")


_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None


def _release_free_heap() -> None:
    """Collect garbage and hand glibc's free heap back to the kernel, so freed memory does not count."""
    gc.collect()
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


def kernel_peak_unavailable() -> str | None:
    """Why the kernel's resettable high-water mark cannot be read here, or None."""
    try:
        _status_bytes("VmHWM")
        CLEAR_REFS.write_text(RESET_PEAK)
    except (OSError, RuntimeError) as exc:
        return f"the kernel's peak resident size cannot be read and reset here ({exc})"
    return None


@dataclass(frozen=True)
class Meter:
    """Where memory is counted: `settle` makes `in_use` exact (free the heap, or synchronise the device),
    `reset_peak` starts a new high-water mark and `peak` reads it."""

    method: str
    settle: Callable[[], object]
    in_use: Callable[[], int]
    reset_peak: Callable[[], object]
    peak: Callable[[], int]


def _meter(backend: Backend) -> Meter | str:
    """The meter for `backend`'s device, or why its memory cannot be measured here."""
    if backend.device == "cuda":
        if backend.format not in TORCH_FORMATS:
            return f"{backend.name} allocates outside PyTorch's allocator: not measured"
        return Meter("torch.cuda", torch.cuda.synchronize, torch.cuda.memory_allocated,
                     torch.cuda.reset_peak_memory_stats, torch.cuda.max_memory_allocated)
    reason = kernel_peak_unavailable()
    if reason is not None:
        return reason
    return Meter("VmHWM", _release_free_heap, lambda: _status_bytes("VmRSS"),
                 lambda: CLEAR_REFS.write_text(RESET_PEAK), lambda: _status_bytes("VmHWM"))


def _measure_here(backend_name: str, ref: ModelRef, batches: tuple[int, ...], threads: int,
                  config: BackendConfig | None) -> PeakMemory:
    """In the fresh process: fix threads as the benchmark did, then load the model and run each batch."""

    fix_threads(threads)
    backend = get_backend(backend_name)
    meter = _meter(backend)
    if isinstance(meter, str):
        return PeakMemory("torch.cuda" if backend.device == "cuda" else "VmHWM", dict.fromkeys(batches), meter)
    inputs = {batch: sample_input(batch, ref.in_features) for batch in batches}  # not the model's memory
    meter.settle()
    before = meter.in_use()
    runner = backend.load(ref.source_for(backend), threads, config)
    peaks: dict[int, int | None] = {}
    for batch in sorted(batches):
        call = runner.prepare(inputs[batch])  # compile: builds this shape, outside the guard as in the suite
        meter.settle()
        meter.reset_peak()
        with runner.guard():
            for _ in range(CALLS_PER_BATCH):
                call()
        peaks[batch] = meter.peak() - before
        del call
    verify_runner(backend, ref, runner)
    return PeakMemory(meter.method, peaks)


def peak_memory(backend: Backend, ref: ModelRef, batches: Sequence[int], threads: int,
                config: BackendConfig | None = None) -> PeakMemory:
    """Peak memory of `ref` on `backend` at each batch, in a fresh process (`timing.fresh_process_context`)."""

    context = fresh_process_context()
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_measure_here, backend.name, ref, tuple(batches), threads, config).result()
