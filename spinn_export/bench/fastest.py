"""The fastest verified deployment: per batch, the (variant, backend) within the accuracy budget with the highest
speedup over dense float32 on the headline backend (`defaults.HEADLINE_BACKEND`), measured paired.

Verified means: a float32 variant (CSR and magnitude-masked included) by the parity check every runner passes
before it is timed (within atol 1e-5 / rtol 1e-4 of eager float32: `variants.open_runner`); a low-precision
one by the manifest's `within_budget` for the very file timed (its validation R² drop at export within
`--max-r2-drop`). A low-precision file without a verdict (its data unknown at export, or a manifest written
before the budget existed) is not verified, and the reason says so; it is never assumed to pass.

The matrix nominates, a paired measurement decides. Matrix medians of different backends are minutes apart, and
on a shared machine the load moves them by more than the differences between backends (docs/MEASURED.md). So
each backend's fastest verified case is a finalist (the `FINALISTS` fastest of them by median), each finalist is
timed against dense float32 on the headline backend, and the one with the highest paired speedup is the fastest
deployment; no ratio of two medians timed apart is ever presented.

The pairing is A B B A blocks (`paired.abba_blocks`, `summarize`'s bootstrap CI) across runtimes: each switch
of runtime waits for ONNX Runtime's idle pool to stop spinning, then makes one untimed call. Alternating call by
call, as the latency matrix does within one backend, is unfair across runtimes: ONNX Runtime's global pool spins
for tens of milliseconds after each run and takes the cores from whatever runs next (without the wait, a speedup
across runtimes grew with the block length: docs/MEASURED.md). A deployment runs one runtime, so the switch is not
timed.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

from spinn_export.bench.paired import (
    ABBA_METHOD,
    PairedConfig,
    abba_blocks,
    cycle_ratios,
    median_block_times,
    summarize,
)
from spinn_export.bench.timing import Call, Clock, warm_up
from spinn_export.bench.variants import ModelRef
from spinn_export.defaults import HEADLINE_BACKEND
from spinn_export.export.manifest import read_manifest

REFERENCE_BACKEND = HEADLINE_BACKEND  # what "dense float32" means in the fastest deployment's speedup
PARITY, BUDGET = "float32 parity", "accuracy budget"
FINALISTS = 3  # backends re-timed per batch: ~2-8 s each at the default cycles on 2 cores


@dataclass(frozen=True)
class Verdict:
    """Whether a timed file is within the accuracy budget (`by`: how that is known, or why it is not), and its
    validation R² change against its float32 model as the manifest records it (None for float32)."""

    verified: bool
    by: str
    val_r2_delta: float | None = None


def verdict_for(ref: ModelRef, runtime_format: str) -> Verdict:
    """The verdict on `ref` as a backend opening `runtime_format` runs it."""

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
                       f"the manifest records ΔR² {delta:+.4f} but no budget verdict "
                       "(it predates --max-r2-drop)", delta)
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
    speedup: float = 1.0  # paired over its own backend's dense (the matrix's interleaved rounds); dense: 1.0


def finalists(candidates: Iterable[Candidate], count: int = FINALISTS) -> list[Candidate]:
    """Each backend's fastest verified candidate, the `count` fastest of those; none if none is verified.

    Within a backend the highest paired speedup over that backend's dense decides, not the lowest median: the
    medians of two variants are timed a minute apart, so a quiet minute could crown the slower one. Across
    backends only medians exist, so they merely choose which backends' best are re-timed."""
    best: dict[str, Candidate] = {}
    for candidate in sorted((c for c in candidates if c.verdict.verified), key=lambda c: (-c.speedup, c.latency_s)):
        best.setdefault(candidate.backend, candidate)
    return sorted(best.values(), key=lambda c: c.latency_s)[:count]


@dataclass(frozen=True)
class Fastest:
    """`spinn.fastest` in the benchmark JSON: one batch's fastest verified deployment and its paired speedup over
    dense float32 on `baseline_backend` (median of the rounds' ratios, bootstrap 95 % CI)."""

    batch: int
    variant: str
    backend: str
    precision: str
    latency_s: float  # the candidate's median per-call time over its blocks
    speedup_vs_dense_fp32: float
    ci_low: float
    ci_high: float
    val_r2_delta: float | None
    verified_by: str
    baseline_backend: str
    baseline_latency_s: float
    cycles: int
    calls_per_block: int
    method: str = ABBA_METHOD
    finalists: tuple[dict[str, Any], ...] = ()  # every finalist timed at this batch: variant, backend, speedup, CI
    compute_bound_s: float | None = None  # `with_bound`: its FLOPs per call at its precision's measured ceiling
    bound_fraction: float | None = None  # compute_bound_s / latency_s: how close it runs to the machine's limit
    ceiling_precision: str | None = None
    ceiling_gflops: float | None = None
    time_by_operator: dict[str, Any] | None = None  # `runtimes.profile.TimeByOperator.to_dict`; None: no profiler
    same_kernel: dict[str, Any] | None = None  # `bench.bound.deployment_bound`: its own kernels at its own shapes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NotMeasured:
    """`spinn.fastest_skipped`: a batch without a fastest deployment, and why."""

    batch: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_fastest(batch: int, chosen: Candidate, precision: str, call: Call, baseline_call: Call,
                    config: PairedConfig, clock: Clock = time.perf_counter, across_runtimes: bool = True) -> Fastest:
    """`config.cycles` A B B A cycles of dense on the reference backend (A) and the candidate (B); each cycle's ratio
    is time(A) / time(B). A block lasts about `config.block_seconds` of the slower call, sized on the median warm-up
    call (one call caught by a neighbour's burst must not shrink the blocks to a millisecond of noise).
    `across_runtimes`: the candidate's backend runs on another runtime than the reference's
    (`paired.switches_runtime`)."""
    slower = max(warm_up(call, clock=clock), warm_up(baseline_call, clock=clock))
    calls = max(1, round(config.block_seconds / max(slower, 1e-9)))
    blocks = abba_blocks(baseline_call, call, calls, config.cycles, clock, across_runtimes=across_runtimes)
    baseline_latency, latency = median_block_times(blocks)
    median, low, high = summarize([cycle_ratios(blocks)], config.bootstrap, config.seed)
    return Fastest(batch=int(batch), variant=chosen.variant, backend=chosen.backend, precision=precision,
                   latency_s=latency, speedup_vs_dense_fp32=median, ci_low=low, ci_high=high,
                   val_r2_delta=chosen.verdict.val_r2_delta, verified_by=chosen.verdict.by,
                   baseline_backend=REFERENCE_BACKEND, baseline_latency_s=baseline_latency,
                   cycles=config.cycles, calls_per_block=calls)


def with_bound(result: Fastest, flops_per_call: float, ceiling_precision: str, ceiling_gflops: float | None) -> Fastest:
    """`result` with its distance to the machine's limit: the time its FLOPs (GEMMs and bias adds) would take at
    the GEMM ceiling of its precision measured in this session, and the fraction of that bound it reaches
    (1.0 would be running at the ceiling). No ceiling measured at that precision: no bound, never another's."""
    if ceiling_gflops is None:
        return replace(result, ceiling_precision=ceiling_precision)
    bound = flops_per_call / (ceiling_gflops * 1e9)
    return replace(result, compute_bound_s=bound, bound_fraction=bound / result.latency_s,
                   ceiling_precision=ceiling_precision, ceiling_gflops=ceiling_gflops)


def decide(measured: list[Fastest]) -> Fastest:
    """The finalist with the highest paired speedup, carrying every finalist's figure."""
    summary = tuple({"variant": m.variant, "backend": m.backend, "speedup": m.speedup_vs_dense_fp32,
                     "ci_low": m.ci_low, "ci_high": m.ci_high, "bound_fraction": m.bound_fraction} for m in measured)
    best = max(measured, key=lambda m: m.speedup_vs_dense_fp32)
    return replace(best, finalists=summary)
