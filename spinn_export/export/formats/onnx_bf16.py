"""bf16 on OpenVINO: the float32 ONNX graph, marked to be compiled with OpenVINO's bf16 inference precision.

bf16 is a runtime setting, not different weights: OpenVINO converts the float32 graph when it compiles it for a
CPU with native bf16 (AMX-BF16, AVX512-BF16). It is represented as an artifact all the same, a copy of the
float32 ONNX with one metadata entry (`MARKER` = "bf16"), because everything downstream identifies a model by
its file: the manifest record that carries its recorded error and accuracy, the `ModelRef` a benchmark runs,
and the fresh processes of the peak-memory and paired measurements, which hand a backend nothing but a file.
A precision carried beside the file (a backend option) would reach some of those and silently not the
others; in the file it reaches all of them. The copy costs the float32 file's bytes.

Its error and validation accuracy are measured when it is first opened at bf16, at export on the exporting
machine, and later runs are held to twice that error. Producing it needs native bf16 (`available`): elsewhere
OpenVINO quietly computes in float32 (or emulates bf16 on AVX-512 CPUs without BF16), so the recorded error
would describe another computation. Only backends whose `precisions` include bf16 open it.

Also home of the OpenVINO code the export and bench stages share: one Core per process, the CPU's capabilities,
and compiling an ONNX file with its inference precision, threads and streams set explicitly and read back, and
its tanh computed as 2 sigmoid(2x) - 1 (`tanh_as_sigmoid`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from spinn_export.errors import UserError, require_file
from spinn_export.export.formats import ARTIFACT_HINT, Format, Predict, quiet, reason, unreadable
from spinn_export.export.formats.onnx import check_onnx, onnx_bytes, onnx_weight_shapes
from spinn_export.model.architecture import Architecture

if TYPE_CHECKING:  # openvino is an optional extra, imported only where it is used
    import openvino as ov

DEVICE = "CPU"
MARKER = "spinn_export.inference_precision"  # ONNX metadata; OpenVINO's ONNX reader files it under rt_info "framework"
HINTS = {"fp32": "f32", "bf16": "bf16"}  # a declared precision -> OpenVINO's INFERENCE_PRECISION_HINT
TANH_FORMS = ("sigmoid", "native")  # how OpenVINO computes tanh: `tanh_as_sigmoid`, or its own Tanh
INSTALL_HINT = "pip install 'spinn-export[openvino]'"


def openvino_missing() -> str | None:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return f"openvino is not installed ({INSTALL_HINT})"
    return None


@functools.cache
def core() -> ov.Core:
    """One Core per process: it loads the CPU plugin once, and every compiled model shares its thread pool."""
    import openvino as ov

    return ov.Core()


def cpu_capabilities() -> tuple[str, ...]:
    """OpenVINO's OPTIMIZATION_CAPABILITIES of this CPU (FP32, BF16, FP16, INT8, ...)."""
    return tuple(str(c) for c in core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES"))


def native_bf16_missing() -> str | None:
    """None where OpenVINO computes bf16 natively on this CPU (it lists BF16: AMX-BF16 or AVX512-BF16), else why not."""
    missing = openvino_missing()
    if missing:
        return missing
    try:
        capabilities = cpu_capabilities()
    except Exception as exc:  # a CPU plugin that fails to load raises OpenVINO's own RuntimeError types
        return f"OpenVINO's CPU plugin did not load ({reason(exc)})"
    if "BF16" not in capabilities:
        return f"this CPU has no native bf16 (OpenVINO's capabilities here: {', '.join(capabilities)})"
    return None


def declared_precision(model: ov.Model) -> str:
    """The precision an ONNX file declares through MARKER; float32 (and int8 ONNX, whose float parts are float32)
    by default."""
    key = ["framework", MARKER]
    return model.get_rt_info(key).astype(str) if model.has_rt_info(key) else "fp32"


@dataclass(frozen=True)
class Compiled:
    """An OpenVINO-compiled model and the settings it reports (read back, never assumed)."""

    model: Any  # openvino.CompiledModel
    precision: str  # the inference precision OpenVINO computes in: "f32" or "bf16"
    threads: int
    streams: int
    tanh: str = "native"  # one of TANH_FORMS: how its tanh layers were computed

    @property
    def label(self) -> str:
        import openvino as ov

        tanh = ", tanh as 2 sigmoid(2x) - 1" if self.tanh == "sigmoid" else ""
        return f"OpenVINO {ov.get_version().split('-')[0]} {DEVICE} {self.precision} ({self.streams} stream{tanh})"


def tanh_as_sigmoid(model: ov.Model) -> int:
    """Rewrite every float32 Tanh as 2 sigmoid(2x) - 1, the same function (5e-7 apart on the reference model);
    returns how many were rewritten.

    Why: OpenVINO's CPU plugin fuses either form into the preceding FullyConnected, but on AVX2 CPUs its Tanh
    costs more than the matrix product it follows (its kernel gathers from a table, and gathers are slow on AMD
    Zen). Measured on an AMD EPYC (AVX2, 2 threads), one 8192 x 512 x 512 layer: 31.7 ms without an activation,
    47.4 ms with Tanh, 31.7 ms with the sigmoid form; the dense reference model at batch 8192 went from 126-175 ms
    to 70-89 ms. The float32 parity check before timing proves the rewritten graph.
    """
    import openvino as ov
    from openvino import opset13 as ops

    rewritten = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Tanh" or node.get_output_element_type(0) != ov.Type.f32:
            continue
        two, one = ops.constant(np.float32(2)), ops.constant(np.float32(1))
        sigmoid = ops.sigmoid(ops.multiply(node.input_value(0), two))
        node.output(0).replace(ops.subtract(ops.multiply(sigmoid, two), one).output(0))
        rewritten += 1
    return rewritten


def compile_onnx(path: str | Path, hint: str | None = None, threads: int = 0, streams: int = 1,
                 rewrite_tanh: bool = True) -> Compiled:
    """Compile an ONNX file for the CPU with every setting explicit: INFERENCE_PRECISION_HINT (`hint`, or what the
    file declares; f32 must be asked for, or AMX CPUs compute float32 models in bf16), NUM_STREAMS,
    INFERENCE_NUM_THREADS (0: OpenVINO's choice), the LATENCY performance hint, and `rewrite_tanh`
    (`tanh_as_sigmoid`; False keeps OpenVINO's Tanh).

    Raises UserError if the file is unreadable, or if OpenVINO would compute in another precision than asked
    (bf16 requested on a CPU without it compiles silently to f32).
    """
    import openvino.properties as props
    import openvino.properties.hint as hints
    import openvino.properties.streams as ov_streams

    path = Path(path)
    require_file(path, "ONNX file", ARTIFACT_HINT)
    try:
        with quiet():
            model = core().read_model(str(path))
    except Exception as exc:  # OpenVINO raises its own exception types for every kind of bad file
        raise unreadable(path, "ONNX", exc) from None
    rewritten = rewrite_tanh and tanh_as_sigmoid(model) > 0
    requested = hint or HINTS[declared_precision(model)]
    settings = {hints.inference_precision: requested, hints.performance_mode: hints.PerformanceMode.LATENCY,
                ov_streams.num: streams, props.inference_num_threads: threads}
    try:
        with quiet():
            compiled = core().compile_model(model, DEVICE, settings)
    except Exception as exc:  # an operator or setting the CPU plugin does not support
        raise UserError(f"{path}: OpenVINO cannot compile it for the {DEVICE} ({reason(exc)})") from None
    used = str(compiled.get_property(hints.inference_precision).to_string())
    if used != requested:
        raise UserError(f"{path}: OpenVINO computes this model in {used} here, not the requested {requested} "
                        f"({native_bf16_missing() or 'the CPU plugin chose otherwise'}); ask for another precision")
    return Compiled(compiled, used, int(compiled.get_property(props.inference_num_threads)),
                    int(compiled.get_property(ov_streams.num)), "sigmoid" if rewritten else "native")


def openvino_predict(compiled: Compiled) -> Predict:
    """Outputs for a float32 batch, through one reused infer request (copied out: the request reuses its buffers)."""
    request = compiled.model.create_infer_request()
    return lambda x: np.array(request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})[0])


def write_onnx_bf16(model: nn.Module, architecture: Architecture, path: Path, opset: int) -> None:
    """The float32 ONNX export, byte for byte in its graph, with MARKER = "bf16" in its metadata."""
    import onnx

    marked = onnx.load_from_string(onnx_bytes(model, architecture, opset))
    onnx.helper.set_model_props(marked, {**{p.key: p.value for p in marked.metadata_props}, MARKER: "bf16"})
    path.write_bytes(marked.SerializeToString())
    check_onnx(path)


ONNX_BF16 = Format("onnx-bf16", ".bf16.onnx", write_onnx_bf16, lambda path: openvino_predict(compile_onnx(path)),
                   onnx_weight_shapes,
                   "float32 ONNX marked to run in bf16 on OpenVINO (needs a CPU with native bf16; error and accuracy "
                   "recorded)", precision="bf16", opened_as="onnx", default=False, uses_opset=True,
                   available=native_bf16_missing)
