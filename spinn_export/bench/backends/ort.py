"""ONNX Runtime on the CPU and on CUDA (IOBinding: inputs and outputs bound once, resident on the GPU for CUDA),
and on the CPU with the exporter's offline-optimised graph (`onnx-optimized`).

Sessions are `runtimes.onnxruntime`'s: on its process-wide pool, on the provider asked for and no other. torch is
imported before any session (by `timing`), so onnxruntime-gpu reuses the CUDA and cuDNN libraries a CUDA build of
torch has loaded when their major versions match.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spinn_export.bench.backends import (
    Backend,
    BackendConfig,
    ProviderFallback,
    Runner,
    Source,
    require_path,
)
from spinn_export.bench.timing import Call
from spinn_export.errors import UserError
from spinn_export.export.formats.onnx_int8 import ONNX_INT8
from spinn_export.hardware import FP32, cpu_model, gpu_info
from spinn_export.runtimes import ONNXRUNTIME
from spinn_export.runtimes import onnxruntime as ort_runtime
from spinn_export.runtimes.profile import TimeByOperator

OPTIMIZATION_LEVELS = ort_runtime.OPTIMIZATION_LEVELS


@dataclass(frozen=True)
class OrtConfig(BackendConfig):
    """`graph_optimization`: ONNX Runtime's session graph-optimisation level."""

    graph_optimization: str = "all"

    def __post_init__(self) -> None:
        if self.graph_optimization not in OPTIMIZATION_LEVELS:
            raise UserError(f"graph_optimization {self.graph_optimization!r} is not one of "
                            f"{', '.join(OPTIMIZATION_LEVELS)}")


@dataclass(frozen=True)
class OrtCudaConfig(OrtConfig):
    """`tf32`: let the CUDA provider use TF32 matmuls (off by default: TF32 is not float32, and parity is
    held to float32)."""

    tf32: bool = False


@dataclass(frozen=True)
class OfflineOrtConfig(OrtConfig):
    """The graph was optimised when it was exported; by default the session adds nothing to it."""

    graph_optimization: str = "disabled"


class OrtRunner(Runner):
    def __init__(self, session, backend: str, device: str, threads: int,  # type: ignore[no-untyped-def]
                 open_profiled: Callable[[str], Any] | None = None):
        expected, used = ort_runtime.PROVIDERS[device], session.get_providers()[0]
        if used != expected:
            raise ProviderFallback(
                f"{backend}: ONNX Runtime runs this model on {used}, not {expected}; "
                "install the CUDA and cuDNN libraries onnxruntime-gpu needs, or benchmark ort-cpu"
            )
        self.session, self.backend, self.device, self.threads, self.provider = session, backend, device, threads, used
        self.input_name = session.get_inputs()[0].name
        self.device_name = _device_name(device)
        self.open_profiled = open_profiled  # the same session, profiler on (`time_by_operator`)

    def prepare(self, x: np.ndarray) -> Call:
        """IOBinding on every device: the input is bound once, here, and so is the output, so a timed call is
        `run_with_iobinding` alone. On the CPU the output is a preallocated array of ours (no allocation and no
        dict of feeds per call: at batch 1 those are most of a call's cost); on CUDA it stays on the GPU, and the
        call returns once the outputs are synchronised."""
        # optional: onnxruntime (the cpu extra)
        import onnxruntime as ort

        x = np.ascontiguousarray(x, dtype=np.float32)
        session, binding = self.session, self.session.io_binding()
        output = session.get_outputs()[0].name
        if self.device == "cpu":
            held = x, np.empty_like(session.run([output], {self.input_name: x})[0])  # the bound memory, kept alive
            binding.bind_ortvalue_input(self.input_name, ort.OrtValue.ortvalue_from_numpy(held[0]))
            binding.bind_ortvalue_output(output, ort.OrtValue.ortvalue_from_numpy(held[1]))
            session.run_with_iobinding(binding)
            return lambda: (held, session.run_with_iobinding(binding))[1]
        device_id = ort_runtime.CUDA_DEVICE_ID
        binding.bind_ortvalue_input(self.input_name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", device_id))
        binding.bind_output(output, "cuda", device_id)

        def call() -> None:
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()  # the device work is finished when the call returns

        call()
        return call

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def time_by_operator(self, x: np.ndarray) -> TimeByOperator | None:
        if self.open_profiled is None or self.device != "cpu":
            return None
        return ort_runtime.time_by_operator(self.open_profiled, np.ascontiguousarray(x, dtype=np.float32))


def _device_name(device: str) -> str:
    return cpu_model() if device == "cpu" else (gpu_info().get("gpu_name") or "unknown NVIDIA GPU")


def open_session(path: Path, device: str, threads: int, config: OrtConfig = OrtConfig(),  # type: ignore[no-untyped-def]
                 profile_prefix: str | None = None):
    """A session with this backend's options (`runtimes.onnxruntime.open_session`)."""
    tf32 = isinstance(config, OrtCudaConfig) and config.tf32
    return ort_runtime.open_session(path, device, threads, config.graph_optimization, tf32, profile_prefix)


def _loader(name: str, device: str):  # type: ignore[no-untyped-def]
    def load(source: Source, threads: int, config: OrtConfig) -> OrtRunner:
        path = require_path(source, name, "ONNX")
        return OrtRunner(open_session(path, device, threads, config), name, device, threads,
                         lambda prefix: open_session(path, device, threads, config, prefix))

    return load


# ONNX Runtime runs float32 ONNX and every int8 form (MatMulInteger, and the QDQ forms that run as int8).
_RUNS = (FP32, ONNX_INT8.precision)
ORT_CPU = Backend("ort-cpu", "cpu", "onnx", _loader("ort-cpu", "cpu"), ort_runtime.missing, precisions=_RUNS,
                  config=OrtConfig, description="ONNX Runtime, CPU provider", runtime=ONNXRUNTIME)
ORT_CUDA = Backend("ort-cuda", "cuda", "onnx", _loader("ort-cuda", "cuda"), ort_runtime.cuda_missing,
                   precisions=_RUNS, config=OrtCudaConfig,
                   description="ONNX Runtime, CUDA provider with IOBinding", runtime=ONNXRUNTIME)
ORT_OPTIMIZED_CPU = Backend("ort-optimized-cpu", "cpu", "onnx-optimized", _loader("ort-optimized-cpu", "cpu"),
                            ort_runtime.missing, config=OfflineOrtConfig,
                            description="ONNX Runtime, CPU provider, on the offline-optimised graph",
                            runtime=ONNXRUNTIME)
