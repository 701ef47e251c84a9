"""bf16 in PyTorch (`torch-bf16`): the checkpoint's weights stored in bfloat16, run by the PyTorch backends (eager,
torch.compile) behind a float32 interface (`model.mlp.Float32IO`).

Where it helps: CPUs with AMX-BF16 or AVX512-BF16, whose bf16 matrix units run several times the float32 rate
(oneDNN's bf16 GEMMs). Elsewhere PyTorch converts bf16 to float32 element by element, several times slower than
float32 itself (docs/MEASURED.md), so the file is produced only where the CPU has native bf16 (`available`), and the
PyTorch CPU backends run bf16 only there (`bench.backends.torch_cpu_precisions`). The OpenVINO route to bf16 is
`onnx_bf16`.

Its error against eager float32 and its validation accuracy are recorded at export, like every low-precision
artifact; safetensors, so loading it runs no code.
"""
from __future__ import annotations

from pathlib import Path

import torch

from spinn_export import hardware
from spinn_export.export.formats import Calibration, Format, Predict, Shape, torch_predict
from spinn_export.model.checkpoint import load_checkpoint, save_checkpoint
from spinn_export.model.mlp import float32_io
from spinn_export.model.network import Network


def native_torch_bf16_missing() -> str | None:
    """None where this CPU computes bf16 natively (AMX-BF16 or AVX512-BF16 among its flags), else why not."""

    native, _, reason = hardware.cpu_support("bf16", hardware.cpu_flags(), torch.backends.cpu.get_cpu_capability())
    return None if native else f"{reason}: PyTorch would emulate bf16 through float32, slower than float32"


def write_torch_bf16(network: Network, path: Path, opset: int, calibration: Calibration | None = None) -> None:
    save_checkpoint(path, network, dtype=torch.bfloat16)


def load_torch_bf16(path: Path) -> Predict:
    return torch_predict(float32_io(load_checkpoint(path).network.module))


def torch_bf16_weight_shapes(path: Path) -> list[Shape]:
    """The stored layer weights' shapes, as the file's own graph names its layers."""
    network = load_checkpoint(path).network
    stored = dict(network.module.named_parameters())
    return [tuple(stored[layer.weight].shape) for layer in network.architecture.layers]  # type: ignore[misc]


TORCH_BF16 = Format("torch-bf16", ".bf16.safetensors", write_torch_bf16, load_torch_bf16, torch_bf16_weight_shapes,
                    "checkpoint weights in bfloat16 for the PyTorch backends (needs a CPU with native bf16; error and "
                    "accuracy recorded)", precision="bf16", opened_as="checkpoint", default=False,
                    available=native_torch_bf16_missing)
