"""ONNX Runtime's offline graph optimisation of the ONNX export (EXTENDED: Gemm+activation fusions, contrib ops).

CPU-specific: the fused contrib operators are the CPU provider's, so it runs on ONNX Runtime's CPU
backend with the session's own optimisation turned down (the work is already done).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from spinn_export.export.formats import Calibration, Format
from spinn_export.export.formats.onnx import check_onnx, onnx_bytes, onnx_predict, onnx_weight_shapes
from spinn_export.model.network import Network


def write_onnx_optimized(network: Network, path: Path, opset: int, calibration: Calibration | None = None) -> None:
    # optional: onnxruntime (the cpu extra)
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "model.onnx"
        source.write_bytes(onnx_bytes(network, opset))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(path)
        options.log_severity_level = 3
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    check_onnx(path)


ONNX_OPTIMIZED = Format("onnx-optimized", ".ort-opt.onnx", write_onnx_optimized, onnx_predict, onnx_weight_shapes,
                        "ONNX Runtime offline-optimised ONNX (EXTENDED level, CPU fusions)", uses_opset=True)
