"""OpenVINO: one Core per process, the CPU's capabilities, compiling an ONNX file with its inference precision,
threads and streams set explicitly and read back, tanh computed as 2 sigmoid(2x) - 1, its version, and its GEMMs for
the ceilings.

OpenVINO chooses for itself unless told: on CPUs with AMX or AVX512-BF16 it computes float32 models in bf16, and it
picks its own streams and threads. So every setting that changes the result or the timing is set, and what the
compiled model reports is what is recorded; a model that would compute in another precision than asked is refused.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spinn_export.errors import UserError, first_line, require_file
from spinn_export.progress import quiet
from spinn_export.runtimes import installed_version
from spinn_export.runtimes.onnx import gemm_file
from spinn_export.runtimes.profile import PROFILED_CALLS, TimeByOperator, summarize_calls

if TYPE_CHECKING:  # openvino is imported only where it is used
    import openvino as ov

DEVICE = "CPU"
MARKER = "spinn_export.inference_precision"  # ONNX metadata; OpenVINO's ONNX reader files it under rt_info "framework"
HINTS = {"fp32": "f32", "bf16": "bf16"}  # a declared precision -> OpenVINO's INFERENCE_PRECISION_HINT
TANH_FORMS = ("sigmoid", "native")  # how OpenVINO computes tanh: `tanh_as_sigmoid`, or its own Tanh
INSTALL_HINT = "pip install 'spinn-export[cpu]'"


def missing() -> str | None:
    try:
        # optional: openvino (the cpu extra); is it installed here?
        import openvino  # noqa: F401
    except ImportError:
        return f"openvino is not installed ({INSTALL_HINT})"
    return None


@functools.cache
def core() -> ov.Core:
    """One Core per process: it loads the CPU plugin once, and every compiled model shares its thread pool."""
    # optional: openvino (the cpu extra)
    import openvino as ov

    return ov.Core()


def cpu_capabilities() -> tuple[str, ...]:
    """OpenVINO's OPTIMIZATION_CAPABILITIES of this CPU (FP32, BF16, FP16, INT8, ...)."""
    return tuple(str(c) for c in core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES"))


def native_bf16_missing() -> str | None:
    """None where OpenVINO computes bf16 natively on this CPU (it lists BF16: AMX-BF16 or AVX512-BF16), else why not."""
    reason = missing()
    if reason:
        return reason
    try:
        capabilities = cpu_capabilities()
    except Exception as exc:  # a CPU plugin that fails to load raises OpenVINO's own RuntimeError types
        return f"OpenVINO's CPU plugin did not load ({type(exc).__name__}: {first_line(exc)})"
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
        # optional: openvino (the cpu extra)
        import openvino as ov

        tanh = ", tanh as 2 sigmoid(2x) - 1" if self.tanh == "sigmoid" else ""
        return f"OpenVINO {ov.get_version().split('-')[0]} {DEVICE} {self.precision} ({self.streams} stream{tanh})"


def tanh_as_sigmoid(model: ov.Model) -> int:
    """Rewrite every float32 Tanh as 2 sigmoid(2x) - 1, the same function (5e-7 apart on the reference model);
    returns how many were rewritten.

    Why: OpenVINO's CPU plugin fuses either form into the preceding FullyConnected, but on AVX2 CPUs its Tanh
    can cost more than the matrix product it follows (its kernel gathers from a table, and gathers are slow on AMD
    Zen; docs/MEASURED.md). The float32 parity check before timing proves the rewritten graph.
    """
    # optional: openvino (the cpu extra)
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
                 rewrite_tanh: bool = True, profiling: bool = False, batch: int | None = None) -> Compiled:
    """Compile an ONNX file for the CPU with every setting explicit: INFERENCE_PRECISION_HINT (`hint`, or what the
    file declares; f32 must be asked for, or AMX CPUs compute float32 models in bf16), NUM_STREAMS,
    INFERENCE_NUM_THREADS (0: OpenVINO's choice), the LATENCY performance hint, and `rewrite_tanh`
    (`tanh_as_sigmoid`; False keeps OpenVINO's Tanh), `profiling` (PERF_COUNT, for `time_by_operator` only), and
    `batch`: the first input's rows fixed before compiling (None keeps the file's dynamic batch). A static shape lets
    the plugin choose its kernels and memory once instead of on each call's shape.

    Raises UserError if the file is unreadable, or if OpenVINO would compute in another precision than asked
    (bf16 requested on a CPU without it compiles silently to f32).
    """
    # optional: openvino (the cpu extra)
    import openvino.properties as props
    import openvino.properties.hint as hints
    import openvino.properties.streams as ov_streams

    path = Path(path)
    require_file(path, "ONNX file", "check the path or re-run `spinn-export export`")
    try:
        with quiet():
            model = core().read_model(str(path))
    except Exception as exc:  # OpenVINO raises its own exception types for every kind of bad file
        raise UserError(f"{path} is not a readable ONNX file ({type(exc).__name__}: {first_line(exc)}); it may be "
                        "truncated or corrupt: re-run `spinn-export export`") from None
    rewritten = rewrite_tanh and tanh_as_sigmoid(model) > 0
    if batch is not None:
        shape = model.inputs[0].get_partial_shape()
        shape[0] = batch
        model.reshape({model.inputs[0]: shape})
    requested = hint or HINTS[declared_precision(model)]
    settings = {hints.inference_precision: requested, hints.performance_mode: hints.PerformanceMode.LATENCY,
                ov_streams.num: streams, props.inference_num_threads: threads, props.enable_profiling: profiling}
    try:
        with quiet():
            compiled = core().compile_model(model, DEVICE, settings)
    except Exception as exc:  # an operator or setting the CPU plugin does not support
        raise UserError(f"{path}: OpenVINO cannot compile it for the {DEVICE} ({type(exc).__name__}: "
                        f"{first_line(exc)})") from None
    used = str(compiled.get_property(hints.inference_precision).to_string())
    if used != requested:
        raise UserError(f"{path}: OpenVINO computes this model in {used} here, not the requested {requested} "
                        f"({native_bf16_missing() or 'the CPU plugin chose otherwise'}); ask for another precision")
    return Compiled(compiled, used, int(compiled.get_property(props.inference_num_threads)),
                    int(compiled.get_property(ov_streams.num)), "sigmoid" if rewritten else "native")


def time_by_operator(compiled: Compiled, x: np.ndarray) -> TimeByOperator:
    """OpenVINO's own per-node counters (a model compiled with `profiling`) over PROFILED_CALLS calls on `x`, by node
    type; nodes fused into another (status NOT_RUN) cost nothing of their own."""

    # optional: openvino (the cpu extra)
    import openvino as ov

    request = compiled.model.create_infer_request()
    request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
    calls, walls = [], []
    for _ in range(PROFILED_CALLS):
        start = time.perf_counter()
        request.infer(share_outputs=True)
        walls.append(time.perf_counter() - start)
        per_type: dict[str, float] = {}
        for node in request.profiling_info:
            if node.status == ov.ProfilingInfo.Status.EXECUTED:
                per_type[node.node_type] = per_type.get(node.node_type, 0.0) + node.real_time.total_seconds()
        calls.append(per_type)
    return summarize_calls("OpenVINO PERF_COUNT", calls, "OpenVINO fuses activations and requantisation into "
                           "FullyConnected where it can: the GEMM share includes those; the rest it did not fuse",
                           walls)


def predict(compiled: Compiled) -> Callable[[np.ndarray], np.ndarray]:
    """Outputs for a float32 batch, through one reused infer request (copied out: the request reuses its buffers)."""
    request = compiled.model.create_infer_request()
    return lambda x: np.array(request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})[0])


def version() -> str | None:
    return installed_version("openvino")


def gemm(form: str, hint: str, size: int, threads: int) -> Callable[[], object]:
    """OpenVINO's CPU plugin on one `runtimes.onnx.gemm` form, compiled with the inference precision, threads and 1
    stream set as the backend does."""
    # optional: openvino (the cpu extra)
    import openvino


    with gemm_file(form, size) as (path, x):
        compiled = compile_onnx(path, hint, threads, 1)
    request = compiled.model.create_infer_request()
    request.set_input_tensor(openvino.Tensor(x))
    return request.infer
