"""What the numbers were measured on (CPU, GPU, driver, library versions) and the machine's ceiling:
a large float32 GEMM's GFLOP/s, so each backend's figure can be read as a fraction of it."""
from __future__ import annotations

import functools
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import torch


@functools.cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def no_gpu_reason() -> str | None:
    """None if an NVIDIA GPU is present (device node or nvidia-smi), else why not."""
    if Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi"):
        return None
    return "no NVIDIA GPU on this machine (no /dev/nvidia0, no nvidia-smi)"


@functools.cache
def gpu_info() -> dict[str, str | None]:
    """GPU name and driver version from torch where it sees a GPU, else from nvidia-smi, else None."""
    name = driver = None
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30, check=True).stdout.splitlines()
            if out:
                smi_name, driver = (part.strip() for part in out[0].split(",", 1))
                name = name or smi_name
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    return {"gpu_name": name, "driver": driver}


def library_versions() -> dict[str, str | None]:
    import numpy

    versions: dict[str, str | None] = {
        "python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version()) if torch.cuda.is_available() else None,
    }
    for module in ("onnx", "onnxruntime"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = None
    return versions


def machine_info() -> dict[str, Any]:
    """The keys added to pytest-benchmark's machine_info (docs/ARCHITECTURE.md)."""
    from spinn_export.bench.timing import default_threads

    return {"cpu_model": cpu_model(), **gpu_info(), "physical_cores": default_threads(),
            "torch_threads": torch.get_num_threads(), **library_versions()}


def gemm_ceiling(threads: int, size: int = 2048, seconds: float = 1.0, device: str = "cpu") -> float:
    """Best GFLOP/s of a size x size float32 matmul over about `seconds` (after one warm-up).

    The best, not the median: a ceiling is what the machine can reach, and on a shared machine
    interference only ever lowers a run.
    """
    from spinn_export.bench.timing import fix_threads

    fix_threads(threads)
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    torch.matmul(a, b)
    sync()
    best = float("inf")
    deadline = time.perf_counter() + seconds
    runs = 0
    while runs < 3 or time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.matmul(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
        runs += 1
    return 2.0 * size**3 / best / 1e9
