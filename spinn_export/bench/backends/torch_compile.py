"""torch.compile (Inductor), with no silent way back to eager.

Trap: Dynamo shares one cache per code object (every nn.Sequential's forward), and after its
recompile limit (8) it runs eager without a word, so a dense and a pruned model at four batch
sizes would put eager numbers under a compile label. Here each model compiles in its own
isolated region with static shapes and `fullgraph=True` (hitting the limit raises), every batch
size is compiled during `prepare`, and `guard()` runs the timed calls under the
"fail_on_recompile" stance and checks Dynamo's graph counter did not move. The same holds for
every mode: `reduce-overhead` and `max-autotune` add CUDA graphs and kernel search on a GPU, not
another way back to eager.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch._dynamo.exc import FailOnRecompileLimitHit
from torch._dynamo.utils import counters

from spinn_export.bench.backends import (
    CHECKPOINT_FORMAT,
    Backend,
    BackendConfig,
    RecompileDetected,
    Source,
    TorchRunner,
    as_module,
    cuda_unavailable_reason,
    torch_cpu_precisions,
)
from spinn_export.bench.timing import Call, fix_threads
from spinn_export.errors import UserError
from spinn_export.export.formats import compiler_missing
from spinn_export.runtimes import TORCH

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class CompileConfig(BackendConfig):
    """`mode`: torch.compile's mode (reduce-overhead uses CUDA graphs on a GPU; max-autotune searches kernels)."""

    mode: str = "default"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"torch.compile mode {self.mode!r} is not one of {', '.join(MODES)}")


def compiled_graphs() -> int:
    """Graphs Dynamo has compiled in this process so far."""

    return int(counters["stats"]["unique_graphs"])


def triton_missing() -> str | None:
    """Inductor writes its GPU kernels in Triton, and Triton builds each kernel's launcher with a C
    compiler (CC, else gcc or clang) the first time it runs: without either, compile-cuda fails mid-run."""
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed (torch.compile's GPU kernels need it; Linux CUDA builds of torch bring it)"
    if not (os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang")):
        return "no C compiler (gcc or clang on PATH, or CC): Triton builds its kernel launchers with one"
    return None


def compile_cuda_missing() -> str | None:
    """None when torch.compile can build and run CUDA kernels here, else why not."""
    return cuda_unavailable_reason() or triton_missing()


class CompiledRunner(TorchRunner):
    def prepare(self, x: np.ndarray) -> Call:
        try:
            return super().prepare(x)
        except FailOnRecompileLimitHit:
            raise RecompileDetected(
                f"{self.backend}: torch.compile hit its recompile limit at batch {x.shape[0]}; "
                "it would run eager from here on, so these timings are refused"
            ) from None

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        before = compiled_graphs()
        try:
            with torch.compiler.set_stance("fail_on_recompile"):
                yield
        except RuntimeError as exc:
            if "recompile" not in str(exc):
                raise
            raise RecompileDetected(
                f"{self.backend}: a timed call needed a recompile (a shape or model not warmed up); "
                "timings under a compile label must be compiled timings"
            ) from None
        if compiled_graphs() != before:
            raise RecompileDetected(f"{self.backend}: Dynamo compiled {compiled_graphs() - before} new graph(s) "
                                    "while timing")


def _loader(device: str):  # type: ignore[no-untyped-def]
    def load(source: Source, threads: int, config: CompileConfig) -> CompiledRunner:
        threads = fix_threads(threads)
        module = as_module(source).to(device)
        compiled = torch.compile(module, mode=config.mode, fullgraph=True, dynamic=False, isolate_recompiles=True)
        return CompiledRunner(compiled, f"compile-{device}", device, "inductor", threads)

    return load


_RUNS, _NOTE = torch_cpu_precisions()
COMPILE_CPU = Backend("compile-cpu", "cpu", CHECKPOINT_FORMAT, _loader("cpu"), compiler_missing, config=CompileConfig,
                      precisions=_RUNS, description=f"torch.compile (Inductor, C++ kernels){_NOTE}", runtime=TORCH)
COMPILE_CUDA = Backend("compile-cuda", "cuda", CHECKPOINT_FORMAT, _loader("cuda"), compile_cuda_missing,
                       config=CompileConfig, description="torch.compile (Inductor, Triton kernels)", runtime=TORCH)
