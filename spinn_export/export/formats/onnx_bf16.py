"""bf16 on OpenVINO: the float32 ONNX graph, marked to be compiled with OpenVINO's bf16 inference precision.

bf16 is a runtime setting, not different weights: OpenVINO converts the float32 graph when it compiles it for a
CPU with native bf16 (AMX-BF16, AVX512-BF16). It is represented as an artifact all the same, a copy of the
float32 ONNX with one metadata entry (`runtimes.openvino.MARKER` = "bf16"), because everything downstream
identifies a model by its file: the manifest record that carries its recorded error and accuracy, the `ModelRef` a
benchmark runs, and the fresh processes of the peak-memory and paired measurements, which hand a backend nothing but a
file.
A precision carried beside the file (a backend option) would reach some of those and silently not the
others; in the file it reaches all of them. The copy costs the float32 file's bytes.

Its error and validation accuracy are measured when it is first opened at bf16, at export on the exporting
machine, and later runs are held to twice that error. Producing it needs native bf16 (`available`): elsewhere
OpenVINO quietly computes in float32 (or emulates bf16 on AVX-512 CPUs without BF16), so the recorded error
would describe another computation. Only backends whose `precisions` include bf16 open it.

OpenVINO itself (compiling, capabilities) is `runtimes.openvino`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from spinn_export.export.formats import Calibration, Format
from spinn_export.export.formats.onnx import check_onnx, onnx_bytes, onnx_weight_shapes
from spinn_export.runtimes import openvino as openvino_runtime

if TYPE_CHECKING:
    from spinn_export.model.network import Network

def write_onnx_bf16(network: Network, path: Path, opset: int, calibration: Calibration | None = None) -> None:
    """The float32 ONNX export, byte for byte in its graph, with MARKER = "bf16" in its metadata."""
    # start-up: onnx only where a file is written or read (listing the formats loads every format module)
    import onnx

    marked = onnx.load_from_string(onnx_bytes(network, opset))
    onnx.helper.set_model_props(marked, {**{p.key: p.value for p in marked.metadata_props},
                                         openvino_runtime.MARKER: "bf16"})
    path.write_bytes(marked.SerializeToString())
    check_onnx(path)


ONNX_BF16 = Format("onnx-bf16", ".bf16.onnx", write_onnx_bf16,
                   lambda path: openvino_runtime.predict(openvino_runtime.compile_onnx(path)),
                   onnx_weight_shapes,
                   "float32 ONNX marked to run in bf16 on OpenVINO (needs a CPU with native bf16; error and accuracy "
                   "recorded)", precision="bf16", opened_as="onnx", default=False, uses_opset=True,
                   available=openvino_runtime.native_bf16_missing)
