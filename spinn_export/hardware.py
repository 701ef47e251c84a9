"""What this CPU offers each precision, read from the kernel's flags at run time, never assumed: shared by the
export stage (which bf16 artifacts are worth writing here) and the bench stage (ceilings, which precisions a
backend runs)."""
from __future__ import annotations

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
