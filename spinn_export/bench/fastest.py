"""The fastest verified deployment: per batch, the fastest (variant, backend) of the latency matrix that is within
the accuracy budget, and its speedup over dense float32 on ort-cpu, measured paired.

Verified means: a float32 variant (CSR and magnitude-masked included) by the parity check every runner passes
before it is timed (within atol 1e-5 / rtol 1e-4 of eager float32: `variants.open_runner`); a low-precision
one by the manifest's `within_budget` for the very file timed (its validation R² drop at export within
`--max-r2-drop`). A low-precision file without a verdict (its data unknown at export, or a manifest written
before the budget existed) is not verified, and the reason says so; it is never assumed to pass.

The matrix picks the candidate (the lowest median latency), but its speedup is measured afresh: the matrix pairs
each case with dense on its *own* backend, while the question is what the fastest deployment gains over the
usual one, dense float32 on ONNX Runtime. So the candidate on its backend and dense on ort-cpu take turns call
by call (`sandwich_ratios`, `summarize`: the same A B A rounds and bootstrap CI as every other speedup), and no
ratio of two medians timed minutes apart is ever presented.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from spinn_export.bench.paired import INTERLEAVED_METHOD, PairedConfig, sandwich_ratios, summarize
from spinn_export.bench.timing import Call, Clock, time_block
from spinn_export.bench.variants import ModelRef

REFERENCE_BACKEND = "ort-cpu"  # what "dense float32" means in the fastest deployment's speedup
PARITY, BUDGET = "float32 parity", "accuracy budget"


@dataclass(frozen=True)
class Verdict:
    """Whether a timed file is within the accuracy budget (`by`: how that is known, or why it is not), and its
    validation R² change against its float32 model as the manifest records it (None for float32)."""

    verified: bool
    by: str
    val_r2_delta: float | None = None


def verdict_for(ref: ModelRef, runtime_format: str) -> Verdict:
    """The verdict on `ref` as a backend opening `runtime_format` runs it."""
    from spinn_export.export.manifest import read_manifest

    if not ref.variant.quantised:
        return Verdict(True, PARITY)
    timed = ref.file(runtime_format)
    records = read_manifest(ref.directory, verify=False).artifacts  # sha256 was checked when the suite started
    record = next((r for r in records if timed is not None and r.file == timed.name), None)
    if record is None:
        return Verdict(False, "the timed file is not in the manifest")
    delta = record.accuracy.get("val_r2_delta") if record.accuracy else None
    if record.within_budget is None:
        return Verdict(False, "no accuracy recorded at export (the checkpoint's data was unknown)" if delta is None else
                       f"the manifest records ΔR² {delta:+.4f} but no budget verdict (it predates --max-r2-drop)", delta)
    if not record.within_budget:
        return Verdict(False, f"validation R² change {delta:+.4f} is outside the export's budget", delta)
    return Verdict(True, BUDGET, delta)


@dataclass(frozen=True)
class Candidate:
    """One measured case of the latency matrix at a batch: its median and its verdict."""

    backend: str
    variant: str
    latency_s: float
    verdict: Verdict


def fastest_verified(candidates: Iterable[Candidate]) -> Candidate | None:
    """The verified candidate with the lowest median latency, or None."""
    verified = [c for c in candidates if c.verdict.verified]
    return min(verified, key=lambda c: c.latency_s) if verified else None


@dataclass(frozen=True)
class Fastest:
    """`spinn.fastest` in the benchmark JSON: one batch's fastest verified deployment and its paired speedup over
    dense float32 on `baseline_backend` (median of the rounds' ratios, bootstrap 95 % CI)."""

    batch: int
    variant: str
    backend: str
    precision: str
    latency_s: float  # the candidate's median over the paired rounds
    speedup_vs_dense_fp32: float
    ci_low: float
    ci_high: float
    val_r2_delta: float | None
    verified_by: str
    baseline_backend: str
    baseline_latency_s: float
    rounds: int
    method: str = INTERLEAVED_METHOD

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NotMeasured:
    """`spinn.fastest_skipped`: a batch without a fastest deployment, and why."""

    batch: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_fastest(batch: int, chosen: Candidate, precision: str, call: Call, baseline_call: Call, rounds: int,
                    config: PairedConfig, clock: Clock = time.perf_counter) -> Fastest:
    """`rounds` single calls of the chosen deployment, each between single calls of dense on the reference backend."""
    baseline_times = [time_block(baseline_call, 1, clock)]
    times = []
    for _ in range(rounds):
        times.append(time_block(call, 1, clock))
        baseline_times.append(time_block(baseline_call, 1, clock))
    median, low, high = summarize([sandwich_ratios(baseline_times, times)], config.bootstrap, config.seed)
    return Fastest(batch=int(batch), variant=chosen.variant, backend=chosen.backend, precision=precision,
                   latency_s=float(np.median(times)), speedup_vs_dense_fp32=median, ci_low=low, ci_high=high,
                   val_r2_delta=chosen.verdict.val_r2_delta, verified_by=chosen.verdict.by,
                   baseline_backend=REFERENCE_BACKEND, baseline_latency_s=float(np.median(baseline_times)),
                   rounds=rounds)
