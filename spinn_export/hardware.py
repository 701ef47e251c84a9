"""The machine: its CPU model, GPU and driver, and what the CPU offers each precision, read at run time, never
assumed. Shared by the runtimes, the export stage (which bf16 artifacts are worth writing here) and the bench stage
(ceilings, which precisions a backend runs, what a measurement was taken on)."""
from __future__ import annotations

import functools
import platform
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

FP32 = "fp32"  # the precision every backend runs (re-exported by bench.variants)
CPU_NATIVE = {"fp32": (), "bf16": ("amx_bf16", "avx512_bf16"), "int8": ("amx_int8", "avx512_vnni", "avx_vnni")}
CPU_VECTOR = ("avx512f", "avx512bw", "avx2", "fma", "asimd")  # what a precision without its own instructions runs on


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as the kernel reports them (x86 `flags`, ARM `Features`); empty where unreadable."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return frozenset()
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_support(precision: str, flags: Iterable[str], capability: str) -> tuple[bool, tuple[str, ...], str | None]:
    """(native, features found, reason it is not native) of a precision on a CPU with these flags and torch
    capability."""
    flags = set(flags)
    native = [f for f in CPU_NATIVE[precision] if f in flags]
    features = (*native, *(f for f in CPU_VECTOR if f in flags), f"torch {capability}")
    if precision == FP32 or native:
        return True, features, None
    return False, features, f"no {' / '.join(CPU_NATIVE[precision])} among the CPU's flags"


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
    # start-up: torch only to ask for the GPU (the report and the CLI read the CPU's flags without it)
    import torch

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
