"""Statically int8-quantised ONNX (QDQ): activation ranges calibrated on the training inputs, so no range is
computed at run time (dynamic int8 measures every activation tensor on every call).

ONNX Runtime's `quantize_static` in QDQ form (QuantizeLinear/DequantizeLinear pairs around each Gemm, which
ONNX Runtime fuses into integer kernels and OpenVINO reads natively), with signed int8 activations and
weights (ONNX Runtime's first choice for QDQ) and per-channel weight scales. Weights use 7 bits
(`reduce_range`): CPUs without VNNI multiply u8 x s8 pairs into a saturating 16-bit sum (vpmaddubsw), which on
the project's MLPs measured several times the error of 7-bit weights, in ONNX Runtime and OpenVINO alike; 7
bits cannot saturate, so one file is accurate on every x86 CPU, with or without VNNI.

The calibration rows come from the exporter (the training inputs of the data the checkpoint was trained on,
or of --data), checked by `formats.calibration_inputs` before anything is written. Its error and validation
accuracy are recorded, not held to float32; it is an ONNX file, so ONNX backends open it as "onnx".
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from spinn_export.export.formats import INPUT_NAME, Calibration, Format, quiet
from spinn_export.export.formats.onnx import check_onnx, onnx_bytes, onnx_predict, onnx_weight_shapes
from spinn_export.model.network import Network

CALIBRATION_BATCH = 512


def _reader(rows: np.ndarray):  # type: ignore[no-untyped-def]
    """ONNX Runtime's calibration interface over fixed batches of `rows`."""
    # optional: onnxruntime (the cpu extra)
    from onnxruntime.quantization import CalibrationDataReader

    class Rows(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[np.ndarray] = iter(np.array_split(rows, max(1, len(rows) // CALIBRATION_BATCH)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    return Rows()


def write_onnx_int8_static(network: Network, path: Path, opset: int,
                           calibration: Calibration | None) -> None:
    """`quant_pre_process` first (shape inference fails on dynamo Gemms without it), then QDQ quantisation
    calibrated on `calibration.rows` (checked by `formats.calibration_inputs`)."""
    # optional: onnxruntime (the cpu extra)
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    rows = np.ascontiguousarray(calibration.rows, dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        source, prepared, quantised = (Path(tmp) / name for name in ("model.onnx", "pre.onnx", "int8.onnx"))
        source.write_bytes(onnx_bytes(network, opset))
        with quiet():
            quant_pre_process(str(source), str(prepared))
            quantize_static(str(prepared), str(quantised), _reader(rows), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                            reduce_range=True, calibrate_method=CalibrationMethod.MinMax)
        shutil.copyfile(quantised, path)
    check_onnx(path)


ONNX_INT8_STATIC = Format("onnx-int8-static", ".int8-static.onnx", write_onnx_int8_static, onnx_predict,
                          onnx_weight_shapes,
                          "statically int8-quantised ONNX (QDQ, calibrated on the training inputs; error and "
                          "accuracy recorded)", precision="int8-static", runs_as="int8", opened_as="onnx",
                          default=False, uses_opset=True, calibrated=True)
