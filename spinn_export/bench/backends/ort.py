"""ONNX Runtime on the CPU (`session.run`) and on CUDA (IOBinding, inputs and outputs resident on the GPU).

Sessions use the process-wide pool of `timing.ort_global_pool`: sessions with their own
pools slow each other 1.5-2x when they alternate (as dense and pruned do in a paired run). The
provider that ORT actually chose is checked: onnxruntime-gpu without its CUDA libraries silently
runs on the CPU, and such a run is refused rather than reported under a CUDA label.
"""
from __future__ import annotations

import numpy as np

from spinn_export.bench.timing import Call
from spinn_export.bench.backends import Backend, ProviderFallback, Runner, Source, register, require_path

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


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
        import onnxruntime as ort

        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        binding.bind_output(self.session.get_outputs()[0].name, "cuda", 0)

        def call() -> None:
            self.session.run_with_iobinding(binding)  # synchronises the CUDA stream at the end of the run
            binding.synchronize_outputs()

        call()
        return call

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def _device_name(device: str) -> str:
    from spinn_export.bench.machine import cpu_model, gpu_info

    return cpu_model() if device == "cpu" else (gpu_info().get("gpu_name") or "unknown NVIDIA GPU")


def open_session(path, device: str, threads: int):  # type: ignore[no-untyped-def]
    """A session on the global thread pool, asking only for this device's provider (then the CPU)."""
    import onnxruntime as ort

    from spinn_export.export.formats import load_onnx_session
    from spinn_export.bench.timing import ort_global_pool

    ort_global_pool(threads)
    options = ort.SessionOptions()
    options.use_per_session_threads = False
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    providers = [PROVIDERS[device]] + (["CPUExecutionProvider"] if device != "cpu" else [])
    return load_onnx_session(path, providers, options)  # refuses a session whose first provider is not ours


def _loader(device: str):
    def load(source: Source, threads: int) -> OrtRunner:
        path = require_path(source, f"ort-{device}", "ONNX")
        return OrtRunner(open_session(path, device, threads), f"ort-{device}", device, threads)

    return load


def _ort_missing() -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu for ort-cuda)"
    return None


def _ort_cuda_missing() -> str | None:
    from spinn_export.bench.machine import no_gpu_reason

    missing = _ort_missing() or no_gpu_reason()
    if missing:
        return missing
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return "this onnxruntime build has no CUDAExecutionProvider (install onnxruntime-gpu)"
    return None


register(
    Backend("ort-cpu", "cpu", "onnx", _loader("cpu"), _ort_missing),
    Backend("ort-cuda", "cuda", "onnx", _loader("cuda"), _ort_cuda_missing),
)
