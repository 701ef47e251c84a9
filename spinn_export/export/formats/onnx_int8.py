"""Dynamically int8-quantised ONNX: its error and validation-accuracy change are recorded, not held to float32.

Weights use 7 bits (`reduce_range`), as in the static form (`onnx_int8_static`): on x86 CPUs without VNNI,
ONNX Runtime multiplies u8 activations by s8 weights into a saturating 16-bit sum (vpmaddubsw), and full 8-bit
weights saturate it (what 8-bit weights lost: docs/MEASURED.md). One file is then accurate on every x86 CPU.

It is an ONNX file, so ONNX Runtime backends open it as "onnx", at int8 precision.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from spinn_export.export.formats import Calibration, Format, quiet
from spinn_export.export.formats.onnx import check_onnx, onnx_bytes, onnx_predict, onnx_weight_shapes
from spinn_export.model.network import Network


def write_onnx_int8(network: Network, path: Path, opset: int, calibration: Calibration | None = None) -> None:
    """Dynamic int8 weight quantisation with 7-bit weights (see the module docstring); `quant_pre_process` first
    (shape inference fails on dynamo Gemms without it)."""
    # optional: onnxruntime (the cpu extra)
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        source, prepared, quantised = (Path(tmp) / name for name in ("model.onnx", "pre.onnx", "int8.onnx"))
        source.write_bytes(onnx_bytes(network, opset))
        with quiet():
            quant_pre_process(str(source), str(prepared))
            quantize_dynamic(str(prepared), str(quantised), weight_type=QuantType.QInt8, reduce_range=True)
        shutil.copyfile(quantised, path)
    check_onnx(path)


ONNX_INT8 = Format("onnx-int8", ".int8.onnx", write_onnx_int8, onnx_predict, onnx_weight_shapes,
                   "dynamically int8-quantised ONNX (error and accuracy delta recorded, not held to float32)",
                   precision="int8", opened_as="onnx", uses_opset=True)
