"""An outside timer: the main job's fastest deployment and dense float32 timed with the runtimes' own tools, outside the
suite's harness, and set beside the suite's paired figure (`bench/outside_timer.py` runs it).

Why: the suite's harness (its Python calls, its fixed settings, its dynamic shapes) is itself a measuring instrument,
and the only check of an instrument is another one. OpenVINO's own `benchmark_app` (shipped in the openvino package,
its `benchmark_app` console script's `main`) times an OpenVINO deployment at 1 stream and the suite's threads, with
`-hint latency` and `-hint none`; an ONNX Runtime deployment and dense float32 on ort-cpu are timed by a plain
`session.run` loop on a session of their own. Rounds alternate (dense, then the deployment under each hint), so a
neighbour's burst lands on both sides. Each round's ratio is dense's median over the deployment's; the verdict
compares the median of the rounds' ratios with the suite's paired speedup (`spinn.fastest`): within `TOLERANCE` they
agree, else they do not, and the report says which.

This module holds what is pure (picking the files, parsing benchmark_app, the verdict) and the two timers.
"""
from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spinn_export.bench.backends import get_backend
from spinn_export.errors import UserError

TOLERANCE = 0.15  # the acceptance: the suite and the outside timer within 15 %
HINTS = ("latency", "none")
ORT, OPENVINO = "ort-cpu", "openvino-cpu"
# the console script `benchmark_app`, run by this Python (the module has no __main__ of its own)
BENCHMARK_APP = ("import sys; from openvino.tools.benchmark.main import main; sys.argv[0] = 'benchmark_app'; "
                 "sys.exit(main())")
MEDIAN = re.compile(r"Median:\s*([0-9.]+)\s*(ms|us)\b")  # benchmark_app prints us below a millisecond
UNITS = {"ms": 1e-3, "us": 1e-6}


@dataclass(frozen=True)
class Deployment:
    """What the outside timer times: the fastest deployment's file and backend at a batch, dense float32's ONNX file,
    and the suite's paired speedup of the one over the other (median, CI)."""

    batch: int
    variant: str
    backend: str
    file: Path
    dense_file: Path
    in_features: int
    suite_speedup: float
    suite_ci: tuple[float, float]


def deployment_of(fastest: Sequence[dict[str, Any]], refs: dict[str, Any], batch: int | None) -> Deployment:
    """The fastest deployment among a results JSON's (its `BenchRecord.fastest`) at `batch` (None: the largest
    measured), the file its backend opens and dense float32's ONNX, from the run's models
    (`bench.options.manifest_models`: the suite's own names); UserError naming what is missing."""

    entries = {int(e["batch"]): e for e in fastest}
    if not entries:
        raise UserError("the results hold no fastest deployment (spinn.fastest): give the bench.json of a main job "
                        "whose suite ran ort-cpu")
    chosen = max(entries) if batch is None else batch
    if chosen not in entries:
        raise UserError(f"no fastest deployment at batch {chosen} in the results (measured: "
                        f"{', '.join(map(str, sorted(entries)))}); choose one of those with --batch")
    entry = entries[chosen]
    if entry["backend"] not in (ORT, OPENVINO):
        raise UserError(f"the fastest deployment at batch {chosen} runs on {entry['backend']}: the outside timer "
                        f"times {ORT} and {OPENVINO} deployments only")
    dense = next((ref for ref in refs.values() if ref.variant.is_baseline), None)
    ref = refs.get(entry["variant"])
    file = None if ref is None else ref.file(get_backend(entry["backend"]).format)
    dense_file = None if dense is None else dense.file(get_backend(ORT).format)
    if file is None or dense_file is None:
        raise UserError(f"the artifacts hold no ONNX file for {entry['variant'] if file is None else 'dense'}: give "
                        "the artifacts folder of the run that wrote these results (--artifacts)")
    return Deployment(chosen, entry["variant"], entry["backend"], file, dense_file, ref.in_features,  # type: ignore
                      float(entry["speedup_vs_dense_fp32"]), (float(entry["ci_low"]), float(entry["ci_high"])))


def benchmark_app_median(output: str) -> float:
    """The median latency (seconds) benchmark_app prints; UserError if its output has none."""
    found = MEDIAN.findall(output)
    if not found:
        raise UserError("benchmark_app printed no median latency: run it by hand to see why "
                        f"(its output ended: {output.strip().splitlines()[-1] if output.strip() else 'nothing'})")
    value, unit = found[-1]
    return float(value) * UNITS[unit]


def benchmark_app(path: Path, batch: int, in_features: int, threads: int, hint: str, seconds: float,
                  precision: str = "f32") -> float:
    """OpenVINO's benchmark_app on `path` at a static [batch, in_features], synchronous calls, the performance hint
    `hint`, for `seconds`: its median latency in seconds. 1 stream and `threads` threads go through a config file
    (its UI takes -nstreams and -nthreads only with -hint none), and the settings it reports are checked."""

    settings = {"INFERENCE_NUM_THREADS": str(threads), "NUM_STREAMS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps({"CPU": settings}))
        command = [sys.executable, "-c", BENCHMARK_APP, "-m", str(path), "-d", "CPU", "-api", "sync", "-hint", hint,
                   "-load_config", str(config), "-shape", f"[{batch},{in_features}]",
                   "-t", str(max(1, round(seconds))), "-infer_precision", precision]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    output = done.stdout + done.stderr  # its log goes to either, by version
    if done.returncode != 0:
        raise UserError(f"benchmark_app failed on {path.name} (exit {done.returncode}): "
                        f"{output.strip().splitlines()[-1] if output.strip() else 'no output'}")
    for key, value in settings.items():
        reported = re.findall(rf"\b{key}: (\S+)", output)
        if reported and reported[-1] != value:
            raise UserError(f"benchmark_app ran {path.name} with {key} {reported[-1]}, not {value}")
    return benchmark_app_median(output)


def ort_loop(path: Path, batch: int, in_features: int, threads: int, seconds: float) -> float:
    """A plain ONNX Runtime loop: its own session (`threads` intra-op threads, default graph optimisation), one
    fixed input, `session.run` for `seconds` after one warm-up call; the median call in seconds."""
    # optional: onnxruntime (the cpu extra)
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal((batch, in_features),
                                                                                     dtype=np.float32)}
    session.run(None, feeds)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < deadline:
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass(frozen=True)
class Verdict:
    """The outside timer's ratio (median over rounds) beside the suite's, their relative difference, and whether they
    agree within `TOLERANCE`."""

    ratio: float
    suite: float
    difference: float
    agree: bool

    @property
    def text(self) -> str:
        return f"agree within {TOLERANCE:.0%}" if self.agree else "do not agree"


def verdict(ratios: Sequence[float], suite: float, tolerance: float = TOLERANCE) -> Verdict:
    """The median of the rounds' ratios against the suite's paired speedup (pure)."""
    ratio = statistics.median(ratios)
    difference = ratio / suite - 1.0
    return Verdict(ratio, suite, difference, abs(difference) <= tolerance)
