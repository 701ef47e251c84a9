"""ONNX Runtime on the CPU (`session.run`) and on CUDA (IOBinding, inputs and outputs resident on the GPU),
and on the CPU with the exporter's offline-optimised graph (`onnx-optimized`).

Sessions use the process-wide pool of `timing.ort_global_pool`: sessions with their own
pools slow each other 1.5-2x when they alternate (as dense and pruned do in a paired run). The
provider that ORT actually chose is checked: onnxruntime-gpu without its CUDA libraries silently
runs on the CPU, and such a run is refused rather than reported under a CUDA label. torch is
imported before any session (by `timing`), so onnxruntime-gpu reuses the CUDA and cuDNN libraries
a CUDA build of torch has loaded when their major versions match.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spinn_export.bench.backends import (
    ONNXRUNTIME,
    Backend,
    BackendConfig,
    ProviderFallback,
    Runner,
    Source,
    require_path,
)
from spinn_export.bench.timing import Call
from spinn_export.errors import UserError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
CUDA_DEVICE_ID = 0  # the CUDA provider's default device: inputs and outputs are bound there
OPTIMIZATION_LEVELS = ("disabled", "basic", "extended", "all")


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
    def __init__(self, session, backend: str, device: str, threads: int):  # type: ignore[no-untyped-def]
        expected, used = PROVIDERS[device], session.get_providers()[0]
        if used != expected:
            raise ProviderFallback(
                f"{backend}: ONNX Runtime runs this model on {used}, not {expected}; "
                "install the CUDA and cuDNN libraries onnxruntime-gpu needs, or benchmark ort-cpu"
            )
        self.session, self.backend, self.device, self.threads, self.provider = session, backend, device, threads, used
        self.input_name = session.get_inputs()[0].name
        self.device_name = _device_name(device)

    def prepare(self, x: np.ndarray) -> Call:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.device == "cpu":
            session, feeds = self.session, {self.input_name: x}
            session.run(None, feeds)
            return lambda: session.run(None, feeds)
        return self._bound_call(x)

    def _bound_call(self, x: np.ndarray) -> Call:
        """IOBinding: the input is copied to the GPU once, here, and the output is bound to the GPU, so a
        timed call moves nothing between host and device; it returns once the outputs are synchronised."""
        import onnxruntime as ort

        session, binding = self.session, self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", CUDA_DEVICE_ID))
        binding.bind_output(session.get_outputs()[0].name, "cuda", CUDA_DEVICE_ID)

        def call() -> None:
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()  # the device work is finished when the call returns

        call()
        return call

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def _device_name(device: str) -> str:
    from spinn_export.bench.machine import cpu_model, gpu_info

    return cpu_model() if device == "cpu" else (gpu_info().get("gpu_name") or "unknown NVIDIA GPU")


def session_providers(device: str, config: OrtConfig) -> list[str | tuple[str, dict[str, str]]]:
    """This device's provider first, then the CPU for any node it cannot run; TF32 only when asked for."""
    if device == "cpu":
        return [PROVIDERS["cpu"]]
    tf32 = isinstance(config, OrtCudaConfig) and config.tf32
    options = {"device_id": str(CUDA_DEVICE_ID), "use_tf32": "1" if tf32 else "0"}
    return [(PROVIDERS[device], options), PROVIDERS["cpu"]]


def open_session(path: Path, device: str, threads: int, config: OrtConfig = OrtConfig()):  # type: ignore[no-untyped-def]
    """A session on the global thread pool, asking only for this device's provider (then the CPU)."""
    import onnxruntime as ort

    from spinn_export.bench.timing import ort_global_pool
    from spinn_export.export.formats.onnx import load_onnx_session

    ort_global_pool(threads)
    options = ort.SessionOptions()
    options.use_per_session_threads = False
    options.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[config.graph_optimization]
    options.log_severity_level = 3
    providers = session_providers(device, config)
    return load_onnx_session(path, providers, options)  # refuses a session whose first provider is not ours


def _loader(name: str, device: str):  # type: ignore[no-untyped-def]
    def load(source: Source, threads: int, config: OrtConfig) -> OrtRunner:
        path = require_path(source, name, "ONNX")
        return OrtRunner(open_session(path, device, threads, config), name, device, threads)

    return load


def ort_missing() -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu for ort-cuda)"
    return None


def ort_cuda_missing() -> str | None:
    from spinn_export.bench.machine import no_gpu_reason

    missing = ort_missing() or no_gpu_reason()
    if missing:
        return missing
    import onnxruntime

    if PROVIDERS["cuda"] not in onnxruntime.get_available_providers():
        return ("this onnxruntime build has no CUDAExecutionProvider: install onnxruntime-gpu alone "
                "(pip uninstall -y onnxruntime onnxruntime-gpu, then pip install onnxruntime-gpu; "
                "both provide one module)")
    return None


ORT_CPU = Backend("ort-cpu", "cpu", "onnx", _loader("ort-cpu", "cpu"), ort_missing, precisions=("fp32", "int8"),
                  config=OrtConfig, description="ONNX Runtime, CPU provider", runtime=ONNXRUNTIME)
ORT_CUDA = Backend("ort-cuda", "cuda", "onnx", _loader("ort-cuda", "cuda"), ort_cuda_missing,
                   precisions=("fp32", "int8"), config=OrtCudaConfig,
                   description="ONNX Runtime, CUDA provider with IOBinding", runtime=ONNXRUNTIME)
ORT_OPTIMIZED_CPU = Backend("ort-optimized-cpu", "cpu", "onnx-optimized", _loader("ort-optimized-cpu", "cpu"),
                            ort_missing, config=OfflineOrtConfig,
                            description="ONNX Runtime, CPU provider, on the offline-optimised graph",
                            runtime=ONNXRUNTIME)
