"""The machine's GEMM ceilings: one per precision the hardware runs, so each case's achieved GFLOP/s is read as a
fraction of its own precision's. Each runtime builds its own GEMM (`runtimes`); this module times them.

A ceiling (`measure_ceilings`) is the best rate of a large square GEMM at one precision on one device, timed
in every library the backends compute with, because they differ (one library's kernel can run at twice another's
rate, docs/MEASURED.md), so a one-library ceiling would let another library's cases exceed it. The
ceiling is the best of those; every implementation's figure is kept beside it (`measured`). The best, not the
median: a ceiling is what the machine can reach, and on a shared machine interference only ever lowers a run.

A ceiling is a measurement like any other, so it is measured the way speedups are (`measure_ceilings`): in
`CEILING_PROCESSES` fresh processes one after another (`timing.in_fresh_processes`), each taking the best of its own
calls. One process's best moved 2x between two runs of the same job an hour apart (docs/MEASURED.md), with the
thread placement and the neighbours' load of that one process; the figure a case is read against is the median over
processes, and the spread (`per_process`, the lowest and the highest) is recorded beside it, so a run whose
processes disagree says so.

What the hardware supports is detected at run time, never assumed: the kernel's CPU flags (/proc/cpuinfo),
torch's CPU capability, the GPU's compute capability. The rules, precision by precision:

* fp32 is always measured (torch.matmul, ONNX Runtime's MatMul and OpenVINO's on the CPU; torch on CUDA,
  TF32 off as in the CUDA backends' defaults).
* int8 is measured wherever an int8 GEMM runs at a vector rate: on every CPU (ONNX Runtime's MatMulInteger,
  uint8 x int8, the kernel both int8 ONNX forms run on, and OpenVINO's int8 MatMul) and on CUDA from int8
  tensor cores (sm_75, torch._int_mm). `native` says whether the CPU has int8 dot-product instructions
  (AVX512-VNNI, AVX-VNNI, AMX-INT8); without them the kernels still run, on AVX2's 8-bit multiplies with
  16-bit intermediate sums, and the int8 cases are a fraction of that measured figure, with `native: false`.
  (torch._int_mm is not used on the CPU: there it is a reference loop two orders of magnitude slower.)
* bf16 is measured only where native: AMX-BF16 or AVX512-BF16 on the CPU (torch.matmul through oneDNN, and
  OpenVINO at bf16), tensor cores from sm_80 on CUDA. Elsewhere bf16 is converted to float32 element by element
  at a small fraction of the float32 rate, and no bf16 artifact is written for such a machine
  (`export.formats.onnx_bf16` needs native BF16), so it is recorded with `gflops: null` and the reason.

A precision that is not measured has no ceiling, and its cases no fraction: never one against another
precision's ceiling (int8-static runs as int8: `export.formats.ceiling_precision`).
"""
from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from spinn_export.bench.timing import fix_threads, in_fresh_processes, time_block
from spinn_export.bench.variants import FP32
from spinn_export.errors import first_line
from spinn_export.export.formats import ceiling_precision
from spinn_export.hardware import CPU_NATIVE, cpu_flags, cpu_support, gpu_info
from spinn_export.runtimes import ONNXRUNTIME, OPENVINO, TORCH
from spinn_export.runtimes import onnxruntime as ort_runtime
from spinn_export.runtimes import openvino as openvino_runtime
from spinn_export.runtimes import torch as torch_runtime

CUDA_NATIVE = {"fp32": (0, 0), "bf16": (8, 0), "int8": (7, 5)}  # compute capability of its tensor cores
WITHOUT_NATIVE = {("cpu", "int8")}  # measured even without native support: vector kernels exist (see above)
# square: at full rate on 2 CPU cores yet timed ~10x per method; a GPU needs more
GEMM_SIZE = {"cpu": 1024, "cuda": 8192}
METHOD_SECONDS = {"cpu": 0.25, "cuda": 0.25}  # per implementation and process: the CPU's 4-5 stay under ~3 s each
CEILING_PROCESSES = 3  # fresh processes per ceiling: a median and a spread, at ~10 s for the CPU's
Ceilings = dict[str, dict[str, "Ceiling"]]  # device -> precision (fp32, bf16, int8) -> ceiling


@dataclass(frozen=True)
class Ceiling:
    """The best rate (GFLOP/s; GOP/s for int8) of a large square GEMM at one precision on one device, or why there is
    none. `native`: the hardware has instructions for this precision (`features` names what was found);
    `reason`: why it is not native, or not measured; `measured`: every implementation timed, with its rate (over
    several processes, its median). `per_process`: each fresh process's ceiling (`pooled`: `gflops` is their median;
    empty for one process's own measurement)."""

    gflops: float | None
    method: str
    native: bool
    features: tuple[str, ...]
    reason: str | None = None
    measured: tuple[tuple[str, float], ...] = ()
    per_process: tuple[float, ...] = ()

    @property
    def spread(self) -> float | None:
        """(highest - lowest) / median of the processes' ceilings: 0.15 = the processes were 15 % apart."""
        if not self.per_process or not self.gflops:
            return None
        return (max(self.per_process) - min(self.per_process)) / self.gflops

    def to_dict(self) -> dict[str, Any]:
        spread = {"per_process": list(self.per_process), "processes": len(self.per_process),
                  "lowest": min(self.per_process), "highest": max(self.per_process),
                  "spread": self.spread} if self.per_process else {}
        return {"gflops": self.gflops, "method": self.method, "native": self.native, "features": list(self.features),
                "reason": self.reason, "measured": dict(self.measured), **spread}


def case_ceiling(ceilings: Ceilings, device: str, precision: str) -> Ceiling | None:
    """The measured ceiling of a case's device and precision, or None (not measured: no fraction)."""
    ceiling = ceilings.get(device, {}).get(ceiling_precision(precision))
    return ceiling if ceiling is not None and ceiling.gflops is not None else None


@functools.cache
def cuda_support(precision: str, capability: tuple[int, int]) -> tuple[bool, tuple[str, ...], str | None]:
    """(native, features, reason) of a precision on a GPU of this compute capability (tensor cores for bf16, int8)."""
    features = (f"sm_{capability[0]}{capability[1]}",)
    needed = CUDA_NATIVE[precision]
    if capability >= needed:
        return True, features + (("tensor cores",) if precision != FP32 else ()), None
    return False, features, f"{precision} tensor cores need sm_{needed[0]}{needed[1]} or newer"


def best_gflops(call: Callable[[], object], flops: float, seconds: float) -> float:
    """The best rate of `call` over about `seconds` (at least 3 timed calls) after one warm-up call."""

    call()
    best = math.inf
    deadline = time.perf_counter() + seconds
    runs = 0
    while runs < 3 or time.perf_counter() < deadline:
        best = min(best, time_block(call, 1))
        runs += 1
    return flops / best / 1e9


@dataclass(frozen=True)
class Gemm:
    """One GEMM implementation a backend computes with: `build(size, threads)` returns one synchronised call."""

    name: str
    device: str
    precision: str
    runtime: str  # as `Backend.runtime`: a case on another runtime is timed beside it with switch pauses
    build: Callable[[int, int], Callable[[], object]]
    missing: Callable[[], str | None] = lambda: None


GEMMS = (
    Gemm("torch.matmul", "cpu", "fp32", TORCH, functools.partial(torch_runtime.gemm, "fp32", "cpu")),
    Gemm("onnxruntime MatMul", "cpu", "fp32", ONNXRUNTIME, functools.partial(ort_runtime.gemm, "float"),
         ort_runtime.missing),
    Gemm("openvino MatMul f32", "cpu", "fp32", OPENVINO, functools.partial(openvino_runtime.gemm, "float", "f32"),
         openvino_runtime.missing),
    Gemm("torch.matmul bf16", "cpu", "bf16", TORCH, functools.partial(torch_runtime.gemm, "bf16", "cpu")),
    Gemm("openvino MatMul bf16", "cpu", "bf16", OPENVINO, functools.partial(openvino_runtime.gemm, "float", "bf16"),
         openvino_runtime.missing),
    Gemm("onnxruntime MatMulInteger u8s8", "cpu", "int8", ONNXRUNTIME, functools.partial(ort_runtime.gemm, "integer"),
         ort_runtime.missing),
    Gemm("openvino MatMul int8 (QDQ)", "cpu", "int8", OPENVINO, functools.partial(openvino_runtime.gemm, "qdq", "f32"),
         openvino_runtime.missing),
    Gemm("torch.matmul", "cuda", "fp32", TORCH, functools.partial(torch_runtime.gemm, "fp32", "cuda")),
    Gemm("torch.matmul bf16", "cuda", "bf16", TORCH, functools.partial(torch_runtime.gemm, "bf16", "cuda")),
    Gemm("torch._int_mm", "cuda", "int8", TORCH, functools.partial(torch_runtime.gemm, "int8", "cuda")),
)


def support(device: str, precision: str) -> tuple[bool, tuple[str, ...], str | None]:
    """What this machine's `device` offers `precision`, detected now."""
    if device == "cuda":
        return cuda_support(precision, torch.cuda.get_device_capability())
    return cpu_support(precision, cpu_flags(), torch.backends.cpu.get_cpu_capability())


def measure_ceiling(device: str, precision: str, threads: int, gemms: Iterable[Gemm] = GEMMS) -> Ceiling:
    """The best of every available implementation of this (device, precision), or why none was timed."""
    native, features, reason = support(device, precision)
    if not native and (device, precision) not in WITHOUT_NATIVE:
        return Ceiling(None, "not measured", False, features, f"{reason}: {precision} would be emulated through "
                       "float32, and no backend runs such models here")
    size = GEMM_SIZE[device]
    measured, skipped = [], []
    for gemm in (g for g in gemms if (g.device, g.precision) == (device, precision)):
        why = gemm.missing()
        if why is None:
            try:
                rate = best_gflops(gemm.build(size, threads), 2.0 * size**3, METHOD_SECONDS[device])
                measured.append((gemm.name, rate))
                continue
            except Exception as exc:  # a library that cannot run this GEMM here: the others still give the ceiling
                why = f"{type(exc).__name__}: {first_line(exc)}"
        skipped.append(f"{gemm.name}: {why}")
    if not measured:
        return Ceiling(None, "not measured", native, features, "; ".join(skipped) or f"no {precision} GEMM on {device}")
    name, gflops = max(measured, key=lambda item: item[1])
    return Ceiling(gflops, method_text(len(measured), name, device, threads), native, features, reason,
                   tuple(measured))


def method_text(implementations: int, best: str, device: str, threads: int) -> str:
    """How a ceiling was measured, in words: how many implementations, the best, the GEMM's size and where."""
    size = GEMM_SIZE[device]
    where = f"{threads} thread(s)" if device == "cpu" else (gpu_info().get("gpu_name") or device)
    return f"best of {implementations}: {best}, {size}x{size}x{size}, {where}"


def ceiling_gemm(ceiling: Ceiling, device: str, precision: str, threads: int,
                 gemms: Iterable[Gemm] = GEMMS) -> tuple[Gemm, Callable[[], object], float]:
    """The implementation that set `ceiling`, built again for timing beside a case (`bench.ceiling_fraction`): that
    GEMM, one synchronised call of it and that call's FLOPs."""
    name = max(ceiling.measured, key=lambda item: item[1])[0]
    gemm = next(g for g in gemms if (g.name, g.device, g.precision) == (name, device, precision))
    size = GEMM_SIZE[device]
    return gemm, gemm.build(size, threads), 2.0 * size**3


def measure_ceilings_here(devices: Iterable[str], threads: int) -> Ceilings:
    """Every precision's ceiling on each device (the devices of the run's backends), at the suite's thread count,
    in this process (ONNX Runtime's GEMM fixes this process's global pool at `threads`)."""

    fix_threads(threads)
    return {device: {precision: measure_ceiling(device, precision, threads) for precision in CPU_NATIVE}
            for device in dict.fromkeys(devices)}


def pooled(runs: Sequence[Ceiling], device: str, threads: int) -> Ceiling:
    """One ceiling from each fresh process's own (`measure_ceilings_here`): the median of the processes' ceilings,
    each implementation's median rate, and every process's figure (`per_process`). A precision none of them
    measured keeps the first one's reason."""
    measured = [run for run in runs if run.gflops is not None]
    if not measured:
        return runs[0]
    per_process = tuple(float(run.gflops) for run in measured)  # type: ignore[arg-type]
    names = dict.fromkeys(name for run in measured for name, _ in run.measured)
    rates = tuple((name, statistics.median(rate for run in measured for n, rate in run.measured if n == name))
                  for name in names)
    best = max(rates, key=lambda item: item[1])[0]
    gflops = statistics.median(per_process)
    first = measured[0]
    method = (f"median of {len(per_process)} fresh processes (lowest {min(per_process):.0f}, highest "
              f"{max(per_process):.0f}), each the {method_text(len(rates), best, device, threads)}")
    return Ceiling(gflops, method, first.native, first.features, first.reason, rates, per_process)


def measure_ceilings(devices: Iterable[str], threads: int, processes: int = CEILING_PROCESSES) -> Ceilings:
    """Every precision's ceiling on each device, measured in `processes` fresh processes one after another
    (`pooled`): a ceiling repeated like a speedup, never one process's luck."""

    devices = tuple(dict.fromkeys(devices))
    runs = in_fresh_processes(functools.partial(measure_ceilings_here, devices, threads), processes)
    return {device: {precision: pooled([run[device][precision] for run in runs], device, threads)
                     for precision in CPU_NATIVE}
            for device in devices}
