"""Paired speedups, two ways: ABBA blocks in fresh processes (the headline backends), and the latency
matrix's own interleaved rounds (every other backend and batch).

ABBA: baseline (A) and candidate (B) alternate A B B A in calibrated blocks within one process,
repeated in several fresh processes.

Timing dense and pruned minutes apart (as a benchmark matrix does) mixes the effect with the
machine's drift, which on a shared machine is larger than the effect (the same ONNX Runtime call
measured 31 us in one process and 41 us in another). Alternating cancels slow drift within a
process; fresh processes sample what differs between processes (memory layout, thread placement).
Each ABBA cycle gives one ratio time(A) / time(B); the result is their median with a two-level
bootstrap 95 % CI (resample processes, then cycles within each), so a process-level effect widens
the interval instead of hiding in it.

Interleaved rounds (`sandwich`, `pooled_result`): the latency benchmark of a candidate times one baseline
call before each of its own rounds and one after the last, so round i gives the ratio
(baseline_i + baseline_i+1) / (2 candidate_i): an A B A sandwich that cancels linear drift and the
order of the two calls, at the cost of timing the baseline once per round. One measurement then
yields both the candidate's latency and its speedup, so no speedup the report shows is a ratio of
two medians taken minutes apart.

One process is not enough for a figure that must repeat: runs of the same artifacts can disagree by more than
each run's own CI (docs/MEASURED.md), because what differs between runs (where the allocator put the weights, the
neighbours' load that minute) is constant within one. So after the matrix, each backend's cases are
timed again, round for round, in fresh processes (`interleaved_ratios`), minutes after the first; the
speedup is the median over all processes' rounds with a CI that resamples processes first
(`pooled_result`), so a lucky or unlucky process widens the interval and moves the figure only by its
share.

Unstable cases (`bench.stability`): a speedup whose CI, or whose processes' medians, spread more than
`defaults.UNSTABLE_SPREAD` of the median either side is flagged, with the reason, wherever it is read; the figure
stays as measured.
"""
from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from spinn_export.bench.backends import BackendConfig, sample_input
from spinn_export.bench.stability import Stability, process_medians, stability
from spinn_export.bench.timing import Call, Clock, calibrate, fix_threads, in_fresh_processes, time_block, warm_up
from spinn_export.bench.variants import ModelRef, open_runner
from spinn_export.errors import UserError

Pairs = dict[Hashable, tuple[Call, Call]]
MakePairs = Callable[[], tuple[Pairs, AbstractContextManager]]


@dataclass(frozen=True)
class PairedConfig:
    """Defaults aim at a 95 % CI half-width under 5 % for ort-cpu at batch 8192 on a shared 2-core machine;
    the width actually reached is stored with every result, so a noisier run says so."""

    processes: int = 4
    cycles: int = 16
    block_seconds: float = 0.03
    bootstrap: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.processes < 1 or self.cycles < 2 or not self.block_seconds > 0:
            raise UserError(f"paired measurement needs >= 1 process, >= 2 cycles and a positive block time, got {self}")


ABBA_METHOD = "abba"  # ABBA blocks in fresh processes (test_paired)
INTERLEAVED_METHOD = "interleaved"  # the latency matrix's rounds, baseline sandwiched around each (test_latency)
SWITCH_SETTLE_S = 0.05  # the wait before a block on another runtime (`abba_blocks`): ORT's idle pool stops spinning


@dataclass(frozen=True)
class PairedResult:
    """One (backend, batch, variant) speedup over the baseline: median and bootstrap 95 % CI.

    `blocks_per_process` counts the timed blocks per process: 4 per ABBA cycle, or one per round of
    an interleaved measurement (1 process)."""

    backend: str
    batch: int
    variant: str
    baseline: str
    speedup_median: float
    ci_low: float
    ci_high: float
    processes: int
    blocks_per_process: int
    flop_ratio: float
    method: str = ABBA_METHOD
    process_medians: tuple[float, ...] = ()  # each process's own median, for `stability`
    load: dict[str, Any] | None = None  # `bench.load.LoadSample.to_dict()` of the machine while it was measured

    @property
    def ci_half_width(self) -> float:
        """Half the CI's width relative to the median (0.05 = +-5 %)."""
        return (self.ci_high - self.ci_low) / 2.0 / self.speedup_median

    @property
    def stability(self) -> Stability:
        return stability(self.speedup_median, self.ci_low, self.ci_high, self.process_medians)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), **self.stability.to_dict()}


def abba_blocks(call_a: Call, call_b: Call, calls_per_block: int, cycles: int, clock: Clock = time.perf_counter,
                across_runtimes: bool = False, sleep: Callable[[float], None] = time.sleep) -> Blocks:
    """Seconds per call of each A B B A cycle's four blocks.

    `across_runtimes`: A and B run on different runtimes in this process. Before each block that takes the cores
    from the other call (the first, then every change of call), wait `SWITCH_SETTLE_S` and make one untimed call.
    The wait is for ONNX Runtime: its global pool's idle threads spin for tens of milliseconds after each run, and
    on 2 cores they take them from whatever runs next (docs/MEASURED.md; the global pool cannot turn spinning off).
    A deployment runs one runtime, so neither the spin nor the first call after a switch is timed.
    """
    previous: Call | None = None

    def block(call: Call) -> float:
        nonlocal previous
        if across_runtimes and call is not previous:
            sleep(SWITCH_SETTLE_S)
            call()
        previous = call
        return time_block(call, calls_per_block, clock)

    return [(block(call_a), block(call_b), block(call_b), block(call_a)) for _ in range(cycles)]


Blocks = list[tuple[float, float, float, float]]  # seconds per call of each A B B A cycle's four blocks


def switches_runtime(runtime_a: str, runtime_b: str) -> bool:
    """Whether alternating calls on these runtimes (`Backend.runtime`) hand the cores from one thread pool to another,
    so `abba_blocks` must wait out the switch (`across_runtimes`). An unknown runtime ("") counts as a switch."""
    return not (runtime_a and runtime_a == runtime_b)


def cycle_ratios(blocks: Blocks) -> list[float]:
    """time(A) / time(B) for each cycle: linear drift within a cycle cancels."""
    return [(a1 + a2) / (b1 + b2) for a1, b1, b2, a2 in blocks]


def median_block_times(blocks: Blocks) -> tuple[float, float]:
    """A's and B's median seconds per call over every block."""
    return (float(np.median([t for a1, _, _, a2 in blocks for t in (a1, a2)])),
            float(np.median([t for _, b1, b2, _ in blocks for t in (b1, b2)])))


def abba(call_a: Call, call_b: Call, calls_per_block: int, cycles: int,
         clock: Clock = time.perf_counter) -> list[float]:
    """time(A) / time(B) for each A B B A cycle (`cycle_ratios`)."""
    return cycle_ratios(abba_blocks(call_a, call_b, calls_per_block, cycles, clock))


def run_pairs(pairs: Pairs, config: PairedConfig, clock: Clock = time.perf_counter) -> dict[Hashable, list[float]]:
    """ABBA for every pair in this process: warm both, size blocks on the slower, then alternate."""
    out: dict[Hashable, list[float]] = {}
    for key, (call_a, call_b) in pairs.items():
        warm_up(call_a, clock=clock)
        warm_up(call_b, clock=clock)
        calls = min(calibrate(call_a, config.block_seconds, clock), calibrate(call_b, config.block_seconds, clock))
        out[key] = abba(call_a, call_b, calls, config.cycles, clock)
    return out


def equal_rounds(ratios_by_process: Sequence[Sequence[float]]) -> list[list[float]]:
    """Every process thinned to the shortest one's length, evenly over its time span, so each process weighs the
    same in `summarize` (at small batches the first process times thousands of rounds, a fresh one a few hundred)."""
    shortest = min(len(ratios) for ratios in ratios_by_process)
    return [[ratios[i] for i in np.linspace(0, len(ratios) - 1, shortest).round().astype(int)]
            for ratios in ratios_by_process]


def summarize(ratios_by_process: Sequence[Sequence[float]], bootstrap: int = 2000,
              seed: int = 0) -> tuple[float, float, float]:
    """Median of all ratios and a two-level (process, then cycle) percentile bootstrap 95 % CI."""
    ratios = np.asarray(ratios_by_process, dtype=np.float64)
    if ratios.ndim != 2 or ratios.size == 0 or not np.all(np.isfinite(ratios)) or np.any(ratios <= 0):
        raise ValueError("ratios must be a non-empty (processes, cycles) array of positive numbers, "
                         f"got shape {ratios.shape}")
    rng = np.random.default_rng(seed)
    processes, cycles = ratios.shape
    pick_process = rng.integers(processes, size=(bootstrap, processes, 1))
    pick_cycle = rng.integers(cycles, size=(bootstrap, processes, cycles))
    medians = np.median(ratios[pick_process, pick_cycle].reshape(bootstrap, -1), axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return float(np.median(ratios)), float(low), float(high)


def sandwich_ratios(baseline_times: Sequence[float], candidate_times: Sequence[float]) -> list[float]:
    """(b_i + b_i+1) / (2 c_i) for candidate rounds c_i each preceded by b_i and followed by b_i+1."""
    if len(baseline_times) != len(candidate_times) + 1 or not candidate_times:
        raise ValueError(f"need one more baseline time than candidate times, got {len(baseline_times)} and "
                         f"{len(candidate_times)}")
    return [(before + after) / (2.0 * candidate)
            for before, after, candidate in zip(baseline_times, baseline_times[1:], candidate_times)]


def pooled_result(backend: str, batch: int, baseline: ModelRef, candidate: ModelRef,
                  ratios_by_process: Sequence[Sequence[float]], config: PairedConfig = PairedConfig()) -> PairedResult:
    """The speedup of one case's interleaved rounds, from one or more processes (`equal_rounds`), with the
    two-level bootstrap CI of `summarize`."""
    ratios = equal_rounds(ratios_by_process)
    median, low, high = summarize(ratios, config.bootstrap, config.seed)
    return PairedResult(backend=backend, batch=int(batch), variant=candidate.name, baseline=baseline.name,
                        speedup_median=median, ci_low=low, ci_high=high, processes=len(ratios),
                        blocks_per_process=len(ratios[0]),
                        flop_ratio=baseline.flops_per_sample / candidate.flops_per_sample, method=INTERLEAVED_METHOD,
                        process_medians=process_medians(ratios))


def interleaved_blocks(anchor: Call, others: Sequence[Call], rounds: int, counts: Sequence[int] | None = None,
                       clock: Clock = time.perf_counter) -> tuple[list[float], list[list[float]]]:
    """Seconds per call: `rounds` rounds of one block of each of `others`, with the anchor's block before the
    first round and after every round, so every block sits between two anchor blocks (`sandwich_ratios`).
    `counts`: calls per block, the anchor's first (default one call each)."""
    counts = list(counts) if counts is not None else [1] * (1 + len(others))
    if len(counts) != 1 + len(others):
        raise ValueError(f"need one block size per call (anchor first), got {len(counts)} for {1 + len(others)}")
    anchor_times = [time_block(anchor, counts[0], clock)]
    other_times: list[list[float]] = [[] for _ in others]
    for _ in range(rounds):
        for times, call, count in zip(other_times, others, counts[1:]):
            times.append(time_block(call, count, clock))
        anchor_times.append(time_block(anchor, counts[0], clock))
    return anchor_times, other_times


def sandwich(call_a: Call, call_b: Call, rounds: int, clock: Clock = time.perf_counter) -> list[float]:
    """`rounds` single calls of B, each between single calls of A: the latency matrix's rounds, as ratios."""
    a_times, (b_times,) = interleaved_blocks(call_a, [call_b], rounds, clock=clock)
    return sandwich_ratios(a_times, b_times)


def run_sandwiches(pairs: Pairs, rounds: dict[Hashable, int],
                   clock: Clock = time.perf_counter) -> dict[Hashable, list[float]]:
    """Interleaved rounds for every pair in this process, after warming both calls."""
    out: dict[Hashable, list[float]] = {}
    for key, (call_a, call_b) in pairs.items():
        if key in rounds:
            warm_up(call_a, clock=clock)
            warm_up(call_b, clock=clock)
            out[key] = sandwich(call_a, call_b, rounds[key], clock)
    return out


Measure = Callable[[Pairs], dict[Hashable, list[float]]]


def _worker(make_pairs: MakePairs, measure: Measure) -> dict[Hashable, list[float]]:
    pairs, guard = make_pairs()
    with guard:
        return measure(pairs)


def measure_in_processes(make_pairs: MakePairs, measure: Measure, processes: int) -> dict[Hashable, list[list[float]]]:
    """Run `make_pairs` and `measure` (ABBA cycles or interleaved rounds) in `processes` fresh processes
    (`timing.fresh_process_context`), one at a time.

    One at a time: processes running side by side would compete for the cores being measured.
    `make_pairs` and `measure` must be picklable (module-level functions or functools.partials of them).
    """
    collected: dict[Hashable, list[list[float]]] = {}
    for result in in_fresh_processes(functools.partial(_worker, make_pairs, measure), processes):
        for key, ratios in result.items():
            collected.setdefault(key, []).append(ratios)
    return collected


def _model_pairs(backend: str, baseline: ModelRef, candidates: tuple[ModelRef, ...], batches: tuple[int, ...],
                 threads: int, config: BackendConfig | None) -> tuple[Pairs, AbstractContextManager]:
    """In the worker: open every model once (parity-checked) and pair baseline vs candidate per batch."""

    fix_threads(threads)
    base = open_runner(backend, baseline, threads, config)
    runners = {ref.name: open_runner(backend, ref, threads, config) for ref in candidates}
    pairs: Pairs = {}
    for batch in batches:
        x = sample_input(batch, baseline.in_features)
        call_a = base.prepare(x)
        for variant, runner in runners.items():
            pairs[(variant, batch)] = (call_a, runner.prepare(x))
    guard = contextlib.ExitStack()
    for runner in (base, *runners.values()):
        guard.enter_context(runner.guard())
    return pairs, guard


def paired_speedups(backend: str, baseline: ModelRef, candidates: Sequence[ModelRef], batches: Sequence[int],
                    threads: int, config: PairedConfig = PairedConfig(),
                    backend_config: BackendConfig | None = None) -> list[PairedResult]:
    """Speedup of each candidate `ModelRef` over `baseline` on `backend` at each batch size."""
    make = functools.partial(_model_pairs, backend, baseline, tuple(candidates), tuple(batches), threads,
                             backend_config)
    collected = measure_in_processes(make, functools.partial(run_pairs, config=config), config.processes)
    results = []
    for ref in candidates:
        for batch in batches:
            ratios = collected[(ref.name, batch)]
            median, low, high = summarize(ratios, config.bootstrap, config.seed)
            results.append(PairedResult(
                backend=backend, batch=int(batch), variant=ref.name, baseline=baseline.name,
                speedup_median=median, ci_low=low, ci_high=high, processes=config.processes,
                blocks_per_process=4 * config.cycles, flop_ratio=baseline.flops_per_sample / ref.flops_per_sample,
                process_medians=process_medians(ratios),
            ))
    return results


def interleaved_ratios(backend: str, baseline: ModelRef, candidates: Sequence[ModelRef],
                       rounds: dict[tuple[str, int], int], processes: int, threads: int,
                       backend_config: BackendConfig | None = None) -> dict[tuple[str, int], list[list[float]]]:
    """Interleaved rounds of every (candidate name, batch) in `rounds` against `baseline`, in `processes` fresh
    processes: per process, {key: that many sandwich ratios}, to pool with the latency matrix's own."""
    batches = tuple(sorted({batch for _, batch in rounds}))
    make = functools.partial(_model_pairs, backend, baseline, tuple(candidates), batches, threads, backend_config)
    return measure_in_processes(make, functools.partial(run_sandwiches, rounds=dict(rounds)), processes)
