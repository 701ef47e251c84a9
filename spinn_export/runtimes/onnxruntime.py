"""ONNX Runtime: its one process-wide thread pool, sessions on the provider asked for (and only that one), its
version, and its GEMMs (MLAS float32 MatMul, u8s8 MatMulInteger) for the ceilings.

Sessions with their own pools slow each other 1.5-2x when they alternate (as dense and pruned do in a paired
run), so a benchmark process creates one global pool before any session and every session opts out of its own.
onnxruntime-gpu without its CUDA libraries silently runs on the CPU: a session whose first provider is not the
one requested is refused.
"""
from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spinn_export.errors import UserError, first_line, require_file
from spinn_export.hardware import no_gpu_reason
from spinn_export.runtimes.onnx import gemm_file
from spinn_export.runtimes.profile import PROFILED_CALLS, TimeByOperator, summarize_calls

if TYPE_CHECKING:  # imported only where it is used: writing plain ONNX does not need it
    import onnxruntime as ort

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
CUDA_DEVICE_ID = 0  # the CUDA provider's default device: inputs and outputs are bound there
OPTIMIZATION_LEVELS = ("disabled", "basic", "extended", "all")
ARTIFACT_HINT = "check the path or re-run `spinn-export export`"

_POOL_THREADS: int | None = None  # the global pool's size once created in this process


def missing() -> str | None:
    try:
        # optional: onnxruntime (the cpu extra); is it installed here?
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu for ort-cuda)"
    return None


def cuda_missing() -> str | None:
    """None where sessions can run on CUDA here, else why not."""
    reason = missing() or no_gpu_reason()
    if reason:
        return reason
    # optional: onnxruntime (the cpu extra)
    import onnxruntime

    if PROVIDERS["cuda"] not in onnxruntime.get_available_providers():
        return ("this onnxruntime build has no CUDAExecutionProvider: install onnxruntime-gpu alone "
                "(pip uninstall -y onnxruntime onnxruntime-gpu, then pip install onnxruntime-gpu; "
                "both provide one module)")
    return None


def require_pool_size(threads: int) -> None:
    """Asking for another thread count once the global pool exists is an error, not a silent mismatch between the
    recorded and the real count."""
    if _POOL_THREADS is not None and threads != _POOL_THREADS:
        raise UserError(f"ONNX Runtime's global thread pool is already fixed at {_POOL_THREADS} threads in this "
                        f"process; run {threads} threads in a fresh process")


def global_pool(threads: int) -> int:
    """Create ONNX Runtime's one process-wide intra-op pool (once); sessions must then opt out of their own.

    Once this pool exists every session in the process must set `use_per_session_threads = False`, so benchmark
    processes create it and export processes do not."""
    global _POOL_THREADS
    require_pool_size(threads)
    if _POOL_THREADS is None:
        # optional: onnxruntime (the cpu extra)
        import onnxruntime

        onnxruntime.set_global_thread_pool_sizes(threads, 1)
        _POOL_THREADS = threads
    return threads


def load_session(path: str | Path, providers: Sequence[str | tuple[str, dict[str, str]]] | None = None,
                 options: ort.SessionOptions | None = None) -> ort.InferenceSession:
    """A session on an ONNX file. Raises UserError if the file is unreadable, or if the first requested provider is
    not the one ONNX Runtime actually uses."""
    # optional: onnxruntime (the cpu extra)
    import onnxruntime

    path = Path(path)
    require_file(path, "ONNX file", ARTIFACT_HINT)
    providers = list(providers or [PROVIDERS["cpu"]])
    if options is None:
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # ORT raises its own pybind exception types for every kind of bad file
        raise UserError(f"{path} is not a readable ONNX file ({type(exc).__name__}: {first_line(exc)}); it may be "
                        "truncated or corrupt: re-run `spinn-export export`") from None
    requested = providers[0] if isinstance(providers[0], str) else providers[0][0]
    if session.get_providers()[0] != requested:
        raise UserError(
            f"{path}: ONNX Runtime is using {session.get_providers()[0]}, not the requested {requested}; "
            "install the matching onnxruntime build and drivers, or choose another provider"
        )
    return session


def session_providers(device: str, tf32: bool = False) -> list[str | tuple[str, dict[str, str]]]:
    """This device's provider first, then the CPU for any node it cannot run; TF32 only when asked for."""
    if device == "cpu":
        return [PROVIDERS["cpu"]]
    options = {"device_id": str(CUDA_DEVICE_ID), "use_tf32": "1" if tf32 else "0"}
    return [(PROVIDERS[device], options), PROVIDERS["cpu"]]


def open_session(path: Path, device: str, threads: int, graph_optimization: str = "all",
                 tf32: bool = False, profile_prefix: str | None = None) -> ort.InferenceSession:
    """A benchmark session: on the global pool, asking only for this device's provider (then the CPU);
    `profile_prefix`: ONNX Runtime's profiler on, its JSON written there (for `time_by_operator` only)."""
    # optional: onnxruntime (the cpu extra)
    import onnxruntime

    global_pool(threads)
    options = onnxruntime.SessionOptions()
    options.use_per_session_threads = False
    if profile_prefix is not None:
        options.enable_profiling, options.profile_file_prefix = True, profile_prefix
    options.graph_optimization_level = {
        "disabled": onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_optimization]
    options.log_severity_level = 3
    return load_session(path, session_providers(device, tf32), options)


def time_by_operator(open_profiled: Callable[[str], ort.InferenceSession], x: Any) -> TimeByOperator:
    """ONNX Runtime's profiler on a session opened by `open_profiled(prefix)` (as the benchmark opens it, profiler
    on): PROFILED_CALLS calls on `x` after one warm-up, each kernel's time summed by operator type per call."""

    walls = []
    with tempfile.TemporaryDirectory() as tmp:
        session = open_profiled(str(Path(tmp) / "ort"))
        feeds = {session.get_inputs()[0].name: x}
        session.run(None, feeds)
        for _ in range(PROFILED_CALLS):
            start = time.perf_counter()
            session.run(None, feeds)
            walls.append(time.perf_counter() - start)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    calls: list[dict[str, float]] = []
    for run in runs[-PROFILED_CALLS:]:
        start, end = run["ts"], run["ts"] + run["dur"]
        per_type: dict[str, float] = {}
        for event in events:
            if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time") \
                    and start <= event["ts"] <= end:
                operator = event.get("args", {}).get("op_name", "?")
                per_type[operator] = per_type.get(operator, 0.0) + event["dur"] * 1e-6
        calls.append(per_type)
    note = ("ONNX Runtime fuses an activation into the Gemm before it (FusedGemm) where it can: the GEMM share "
            "includes those; other nodes are kernels of their own")
    return summarize_calls("ONNX Runtime profiler", calls, note, walls)


def predict(path: Path) -> Callable[[Any], Any]:
    """A float32 batch's outputs through a default CPU session (the exporter's check)."""
    session = load_session(path)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def gemm(form: str, size: int, threads: int) -> Callable[[], object]:
    """ONNX Runtime's CPU kernel (MLAS) for one `runtimes.onnx.gemm` form, on the global pool like the backends'
    sessions."""

    with gemm_file(form, size) as (path, x):
        session = open_session(path, "cpu", threads)
    return lambda: session.run(None, {"A": x})
