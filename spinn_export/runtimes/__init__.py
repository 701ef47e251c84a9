"""The runtime libraries models are run and exported with, one module each: ONNX Runtime (`onnxruntime`), OpenVINO
(`openvino`), PyTorch (`torch`), and the ONNX graphs both ONNX runtimes read (`onnx`).

Each module holds what its library needs and nothing else: opening or compiling a model, why the library is missing
here, its version, and its GEMM for the machine's ceilings. The export and bench stages both use them; a runtime
imports no stage. A new runtime is one module here plus its backends.
"""
from __future__ import annotations

import importlib.metadata
import platform

ONNXRUNTIME, OPENVINO, TORCH = "onnxruntime", "openvino", "torch"  # what `Backend.runtime` names
LIBRARIES = ("torch", "numpy", "onnx", "onnxruntime", "openvino", "nncf")  # versions recorded with every measurement


def library_versions() -> dict[str, str | None]:
    """Python and every library a measurement or an artifact depends on (None: not installed), with torch's CUDA
    and cuDNN: the one list the manifest, the benchmark's machine info and the latency tables' keys record."""
    # start-up: torch only where versions are recorded (the report imports this package)
    from spinn_export.runtimes import torch as torch_runtime

    found: dict[str, str | None] = {"python": platform.python_version()}
    for library in LIBRARIES:
        found[library] = installed_version(library, f"{library}-gpu") if library == ONNXRUNTIME else \
            installed_version(library)
    return {**found, **torch_runtime.cuda_versions()}


def installed_version(*distributions: str) -> str | None:
    """The version of the first of these distributions that is installed (onnxruntime or onnxruntime-gpu
    provide one module), without importing it."""
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
