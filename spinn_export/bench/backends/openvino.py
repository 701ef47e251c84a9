"""OpenVINO on the CPU (`openvino-cpu`): ONNX artifacts compiled with every setting that changes the result or the
timing set explicitly, and read back.

OpenVINO chooses for itself unless told: on CPUs with AMX or AVX512-BF16 it computes float32 models in bf16
(errors of bf16 size under a float32 label), and it picks its own streams and threads. So the inference
precision (f32 unless the file declares bf16, `export.formats.onnx_bf16`), NUM_STREAMS (1: one inference at a
time, the latency case), INFERENCE_NUM_THREADS and the LATENCY hint are all set, tanh is computed as
2 sigmoid(2x) - 1 unless the `tanh` option says native (`runtimes.openvino.tanh_as_sigmoid` says why), the compiled
model's own report of them is what the runner records (`provider`, `threads`), and a model that would compute in another
precision than asked is refused. The float32 parity check before timing proves the rest.

Precisions: fp32, both int8 ONNX forms (their float parts at f32), and bf16 only where OpenVINO reports native
BF16 (OPTIMIZATION_CAPABILITIES), asked once when the plug-in loads, so that bf16 pairs are not generated
on other CPUs (the description in `spinn-export backends --json` says why).

Each `prepare` gets its own infer request with its input written once, so the timed call is `infer()` alone,
and prepared calls of several batch sizes (the paired measurement keeps them all) stay independent. With
`static_batch` (the default) `prepare` times the file compiled for that batch alone, as `benchmark_app` and a
deployment of a fixed batch would, after checking that it computes what the verified dynamic-batch model does.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from spinn_export.bench.backends import Backend, BackendConfig, Runner, Source, require_path
from spinn_export.bench.timing import Call
from spinn_export.errors import UserError
from spinn_export.export.formats.onnx_bf16 import ONNX_BF16
from spinn_export.export.formats.onnx_int8 import ONNX_INT8
from spinn_export.hardware import FP32, cpu_model
from spinn_export.runtimes import OPENVINO
from spinn_export.runtimes import openvino as openvino_runtime
from spinn_export.runtimes.openvino import TANH_FORMS, Compiled, compile_onnx, native_bf16_missing
from spinn_export.runtimes.profile import TimeByOperator

NAME = "openvino-cpu"
PRECISION_HINTS = ("auto", "f32", "bf16")
STATIC_BATCH_DIFFERING = 0.01  # the share of outputs a batch-compiled model may round otherwise (`_static`)


@dataclass(frozen=True)
class OpenVinoConfig(BackendConfig):
    """`precision_hint`: INFERENCE_PRECISION_HINT; auto is what the file declares (f32 for float32 and int8 ONNX,
    bf16 for onnx-bf16); forcing bf16 on a float32 variant is refused (no native bf16) or fails its float32 parity
    check, by design. `streams`:
    NUM_STREAMS (1 for latency). `threads`: INFERENCE_NUM_THREADS; 0 is the suite's --threads. `tanh`: "sigmoid"
    computes tanh layers as 2 sigmoid(2x) - 1 (the same function; OpenVINO's own Tanh cost more than the matrix
    product before it on an AVX2 CPU, `runtimes.openvino.tanh_as_sigmoid`), "native" keeps OpenVINO's Tanh.
    `static_batch`: time the model compiled for the prepared batch (see the module's docstring)."""

    precision_hint: str = "auto"
    streams: int = 1
    threads: int = 0
    tanh: str = "sigmoid"
    static_batch: bool = True

    def __post_init__(self) -> None:
        if self.precision_hint not in PRECISION_HINTS:
            raise UserError(f"precision_hint {self.precision_hint!r} is not one of {', '.join(PRECISION_HINTS)}")
        if self.streams < 1:
            raise UserError(f"streams must be at least 1, got {self.streams}")
        if self.threads < 0:
            raise UserError(f"threads must be 0 (the suite's --threads) or more, got {self.threads}")
        if self.tanh not in TANH_FORMS:
            raise UserError(f"tanh {self.tanh!r} is not one of {', '.join(TANH_FORMS)}")


class OpenVinoRunner(Runner):
    def __init__(self, compiled: Compiled, compile_profiled: Callable[[], Compiled] | None = None,
                 compile_for_batch: Callable[[int], Compiled] | None = None):
        self.compiled, self.backend, self.device = compiled, NAME, "cpu"
        self.compile_profiled = compile_profiled  # the same model and settings, PERF_COUNT on
        self.compile_for_batch = compile_for_batch  # the same model and settings, its batch fixed
        self.checked: dict[tuple[int, ...], Compiled] = {}  # batch-compiled models already checked, by input shape
        self.provider, self.threads, self.device_name = compiled.label, compiled.threads, cpu_model()
        self.predict = openvino_runtime.predict(compiled)

    def prepare(self, x: np.ndarray) -> Call:
        """The input is copied once into the request's own input tensor. Not `set_input_tensor` of a tensor of
        ours: the CPU plugin adopts such memory into the graph its requests share, and once the request (and the
        tensor) is freed a later inference of another request uses freed memory (a crash, found measuring peak
        memory, which frees each batch's call before the next)."""
        compiled = self.compiled if self.compile_for_batch is None else self._static(x)
        request = compiled.model.create_infer_request()
        tensor = request.get_input_tensor()
        tensor.shape = list(x.shape)
        tensor.data[:] = x
        request.infer()

        def call() -> None:
            request.infer(share_outputs=True)  # outputs stay in the request's buffers: nothing is copied out

        return call

    def _static(self, x: np.ndarray) -> Compiled:
        """The model compiled for `x`'s batch, refused unless it computes on `x` what the verified model does: every
        output equal to float32 rounding but at most 1 % of them. An int8 quantiser's rounding tie may fall the other
        way under another kernel blocking: 2 of the reference int8 model's 16,384 outputs at batch 8192, 0.11 % of a
        one-layer model's (`bench.bound`); a wrong kernel or layout changes far more."""
        assert self.compile_for_batch is not None
        if x.shape in self.checked:  # the suite prepares one batch many times (rounds, processes' blocks, checks)
            return self.checked[x.shape]
        static = self.compile_for_batch(len(x))
        expected, got = self.predict(x), openvino_runtime.predict(static)(x)
        scale = float(np.abs(expected).max()) or 1.0
        differing = ~np.isclose(got, expected, rtol=1e-4, atol=1e-5 * scale)
        if differing.mean() > STATIC_BATCH_DIFFERING:
            worst = float(np.abs(got - expected).max())
            raise UserError(f"{NAME}: the model compiled for batch {len(x)} differs from the verified one in "
                            f"{differing.mean():.2%} of its outputs (by up to {worst:.3g}); benchmark it with "
                            "static_batch=false")
        self.checked[x.shape] = static
        return static

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.predict(x)

    def time_by_operator(self, x: np.ndarray) -> TimeByOperator | None:
        if self.compile_profiled is None:
            return None
        return openvino_runtime.time_by_operator(self.compile_profiled(), x)


def _load(source: Source, threads: int, config: OpenVinoConfig) -> OpenVinoRunner:
    path = require_path(source, NAME, "ONNX")
    hint = None if config.precision_hint == "auto" else config.precision_hint
    settings = (path, hint, config.threads or threads, config.streams, config.tanh == "sigmoid")
    return OpenVinoRunner(compile_onnx(*settings), lambda: compile_onnx(*settings, profiling=True),
                          (lambda batch: compile_onnx(*settings, batch=batch)) if config.static_batch else None)


def _precisions() -> tuple[tuple[str, ...], str]:
    """What this CPU runs, and a note for the listing when it cannot run bf16 (the backend's own reason covers a
    missing openvino)."""
    bf16_missing = native_bf16_missing()
    if bf16_missing is None:
        return (FP32, ONNX_BF16.precision, ONNX_INT8.precision), ""
    return (FP32, ONNX_INT8.precision), "" if openvino_runtime.missing() else f"; no bf16 here: {bf16_missing}"


_RUNS, _NOTE = _precisions()
OPENVINO_CPU = Backend(NAME, "cpu", "onnx", _load, openvino_runtime.missing, precisions=_RUNS, config=OpenVinoConfig,
                       description=f"OpenVINO, CPU plugin: explicit precision, threads and streams{_NOTE}",
                       runtime=OPENVINO)
