"""PyTorch as a runtime: its CUDA and cuDNN versions, and its GEMMs (oneDNN/MKL on the CPU, cuBLAS on CUDA) for the
ceilings. The eager, TorchScript, torch.export and torch.compile backends run on it."""
from __future__ import annotations

from collections.abc import Callable

import torch


def cuda_versions() -> dict[str, str | None]:
    return {"cuda": torch.version.cuda,
            "cudnn": str(torch.backends.cudnn.version()) if torch.cuda.is_available() else None}


def gemm(precision: str, device: str, size: int, threads: int) -> Callable[[], object]:
    """torch.matmul at fp32 or bf16, or torch._int_mm for int8 (CUDA only: on the CPU it is a reference loop two
    orders of magnitude slower), returning once the device is done."""
    if precision == "int8":
        a, b = (torch.randint(-128, 128, (size, size), dtype=torch.int8, device=device) for _ in range(2))
        op = torch._int_mm
    else:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
        op = torch.matmul
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def call() -> None:
        op(a, b)
        sync()

    return call
