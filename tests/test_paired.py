"""Paired ABBA speedups: the ratio of two known workloads comes out right, alternation cancels drift,
and the bootstrap CI covers the truth and widens with process-to-process spread. Ratios are asserted on a virtual
clock (`tests.virtual_clock`) or on synthetic samples; the fresh processes run real calls, asserted only in what load
cannot change, so no test here depends on how busy the machine is (CI runs them again with the CPUs saturated)."""
from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Hashable

import numpy as np
import pytest

from spinn_export.bench.backends import backends, get_backend
from spinn_export.bench.ceilings import GEMMS
from spinn_export.bench.paired import (
    SWITCH_SETTLE_S,
    Measure,
    PairedConfig,
    PairedResult,
    Pairs,
    abba,
    abba_blocks,
    equal_rounds,
    interleaved_blocks,
    measure_in_processes,
    pooled_result,
    run_pairs,
    run_sandwiches,
    sandwich,
    sandwich_ratios,
    summarize,
    switches_runtime,
)
from spinn_export.errors import UserError
from spinn_export.runtimes import ONNXRUNTIME, OPENVINO, TORCH

from .virtual_clock import VirtualMachine


def busy(seconds: float):
    """Spin for a known wall time: unlike sleep it does not overshoot by a scheduler tick."""
    def call() -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
    return call


def synthetic_pairs():
    """Module level, so fresh processes can unpickle it: real busy-waits on the real clock, so the fresh-process path
    runs as measured, and its outcome is asserted only in what load cannot change (counts, processes, signs)."""
    return {("half", 1): (busy(0.002), busy(0.001))}, contextlib.nullcontext()


def naming_the_process(pairs: Pairs, measure: Measure) -> dict[Hashable, list[float]]:
    """`measure` in the worker, plus which process ran it (module level, picklable)."""
    return {**measure(pairs), "pid": [float(os.getpid())]}


def assert_fresh_processes(collected: dict[Hashable, list[list[float]]], processes: int) -> None:
    pids = [pid for (pid,) in collected.pop("pid")]
    assert len(set(pids)) == processes and os.getpid() not in pids  # each measured in a process of its own


def assert_real_ratios(ratios_by_process: list[list[float]]) -> None:
    """What real timings must satisfy on any machine, however busy: finite, positive, and a CI around the median."""
    assert all(np.isfinite(r) and r > 0 for ratios in ratios_by_process for r in ratios)
    median, low, high = summarize(ratios_by_process)
    assert low <= median <= high


def test_abba_recovers_a_known_speedup():
    machine = VirtualMachine()
    ratios = abba(machine.work(0.002), machine.work(0.001), calls_per_block=3, cycles=20, clock=machine.clock)
    assert len(ratios) == 20
    assert float(np.median(ratios)) == pytest.approx(2.0, rel=0.03)


def test_across_runtimes_each_switch_waits_and_makes_an_untimed_call_first():
    """A spinning pool left by the other runtime costs the calls right after a switch: the wait and the untimed
    call absorb it, and only switches pay them (A B B A: A1 and B1 and A2 follow the other call, B2 does not)."""
    events: list[str] = []
    now = [0.0]

    def runtime(name: str, seconds: float):
        def call() -> None:
            penalty = 5.0 if events and events[-1].startswith("spin") else 0.0  # the first call after a switch
            events.append(name)
            now[0] += seconds + penalty
        return call

    a, b = runtime("A", 2.0), runtime("B", 1.0)
    blocks = abba_blocks(a, b, calls_per_block=2, cycles=2, clock=lambda: now[0], across_runtimes=True,
                         sleep=lambda seconds: events.append(f"spin {seconds}"))
    assert blocks == [(2.0, 1.0, 1.0, 2.0)] * 2  # no penalty timed
    wait = f"spin {SWITCH_SETTLE_S}"
    one_cycle = [wait, "A", "A", "A", wait, "B", "B", "B", "B", "B", wait, "A", "A", "A"]
    assert events == one_cycle + one_cycle[2:]  # cycle 2 opens on A after A: no switch, no wait, no untimed call
    assert 0.02 <= SWITCH_SETTLE_S <= 0.2
    timed_naively = abba_blocks(a, b, calls_per_block=1, cycles=1, clock=lambda: now[0])
    assert timed_naively == [(2.0, 1.0, 1.0, 2.0)]  # same-runtime pairs: no waits, no untimed calls


def test_a_switch_is_a_change_of_runtime_and_every_registered_backend_names_its_own():
    """ort-cpu and ort-optimized-cpu share ONNX Runtime's global pool, so timing one beside the other waits out no
    spin; OpenVINO or PyTorch beside ONNX Runtime does, and so does a backend that does not say what it runs on."""
    assert not switches_runtime(ONNXRUNTIME, ONNXRUNTIME)
    assert switches_runtime(ONNXRUNTIME, OPENVINO) and switches_runtime(TORCH, ONNXRUNTIME) and switches_runtime("", "")
    assert {backend.runtime for backend in backends().values()} <= {ONNXRUNTIME, OPENVINO, TORCH}
    assert not switches_runtime(get_backend("ort-cpu").runtime, get_backend("ort-optimized-cpu").runtime)
    assert switches_runtime(get_backend("ort-cpu").runtime, get_backend("openvino-cpu").runtime)
    assert {gemm.runtime for gemm in GEMMS} <= {ONNXRUNTIME, OPENVINO, TORCH}


def test_abba_cancels_linear_drift():
    """Both calls are equal, but the machine slows down steadily: A B B A still reads 1.0."""
    now = [0.0]
    step = [1.0]

    def clock() -> float:
        return now[0]

    def drifting() -> None:
        now[0] += step[0]
        step[0] += 0.1  # every call is slower than the one before

    ratios = abba(drifting, drifting, calls_per_block=1, cycles=5, clock=clock)
    np.testing.assert_allclose(ratios, 1.0, atol=1e-12)
    naive = [1.0 + 0.1 * i for i in range(0, 20, 2)]  # A then B: B always looks slower
    assert naive[1] != 1.0


def test_summarize_covers_the_truth_and_widens_with_process_spread():
    rng = np.random.default_rng(1)
    tight = 2.5 * np.exp(rng.normal(0, 0.03, size=(4, 20)))
    median, low, high = summarize(tight)
    assert low <= 2.5 <= high and low <= median <= high
    assert (high - low) / 2 / median < 0.05
    spread = tight * np.array([[0.8], [1.0], [1.2], [1.1]])  # each process sees a different machine
    _, low2, high2 = summarize(spread)
    assert high2 - low2 > 2 * (high - low)
    assert summarize(tight, seed=3) == summarize(tight, seed=3)
    for bad in ([[]], [[1.0, float("nan")]], [[1.0, -2.0]]):
        with pytest.raises(ValueError):
            summarize(bad)


def test_run_pairs_and_fresh_processes():
    """The ratio on a virtual clock; the fresh processes for real, each its own, each giving its asked cycles."""
    config = PairedConfig(processes=2, cycles=7, block_seconds=0.01)
    machine = VirtualMachine()
    local = run_pairs({"k": (machine.work(0.002), machine.work(0.001))}, config, clock=machine.clock)
    assert len(local["k"]) == 7 and float(np.median(local["k"])) == pytest.approx(2.0, rel=0.05)
    measure = functools.partial(naming_the_process, measure=functools.partial(run_pairs, config=config))
    collected = measure_in_processes(synthetic_pairs, measure, config.processes)
    assert_fresh_processes(collected, config.processes)
    assert list(collected) == [("half", 1)] and [len(r) for r in collected[("half", 1)]] == [7, 7]
    assert_real_ratios(collected[("half", 1)])


def test_interleaved_rounds_in_fresh_processes():
    """The latency matrix's rounds: the ratio on a virtual clock; repeated in fresh processes for real, the asked
    number of rounds per process."""
    machine = VirtualMachine()
    local = sandwich(machine.work(0.002), machine.work(0.001), rounds=30, clock=machine.clock)
    assert len(local) == 30 and float(np.median(local)) == pytest.approx(2.0, rel=0.05)
    measure = functools.partial(naming_the_process, measure=functools.partial(run_sandwiches, rounds={("half", 1): 9}))
    collected = measure_in_processes(synthetic_pairs, measure, 2)
    assert_fresh_processes(collected, 2)
    assert [len(r) for r in collected[("half", 1)]] == [9, 9]
    assert_real_ratios(collected[("half", 1)])
    assert run_sandwiches({"not asked": (busy(0.0), busy(0.0))}, rounds={}) == {}


def test_interleaved_blocks_put_every_block_between_two_anchor_blocks():
    """The order the latency planner's probes rely on: anchor, then each other call's block once per round, then
    the anchor again; each block makes its asked number of calls and reports seconds per call."""
    events: list[str] = []
    now = [0.0]

    def call(name: str, seconds: float):
        def run() -> None:
            events.append(name)
            now[0] += seconds
        return run

    anchor_times, other_times = interleaved_blocks(call("A", 0.004), [call("p", 0.001), call("q", 0.002)], rounds=2,
                                                   counts=[1, 3, 2], clock=lambda: now[0])
    assert "".join(events) == "A" + "pppqqA" * 2
    assert anchor_times == pytest.approx([0.004] * 3)
    assert other_times == [pytest.approx([0.001] * 2), pytest.approx([0.002] * 2)]
    assert sandwich_ratios(anchor_times, other_times[1]) == pytest.approx([2.0, 2.0])
    with pytest.raises(ValueError, match="one block size per call"):
        interleaved_blocks(call("A", 0.001), [call("p", 0.001)], rounds=1, counts=[1])


class _Ref:
    """What `pooled_result` reads of a `ModelRef`."""

    def __init__(self, name: str, flops: int) -> None:
        self.name, self.flops_per_sample = name, flops


def test_pooled_processes_weigh_equally_and_an_odd_one_moves_the_figure_by_its_share():
    rng = np.random.default_rng(2)
    steady = [tuple(2.0 * np.exp(rng.normal(0, 0.02, size=n))) for n in (400, 20, 20)]  # the matrix's, then 2 fresh
    assert [len(r) for r in equal_rounds(steady)] == [20, 20, 20]
    thinned = equal_rounds(steady)[0]
    assert thinned[0] == steady[0][0] and thinned[-1] == steady[0][-1]  # evenly over the whole span
    dense, structured = _Ref("dense", 300), _Ref("structured", 100)
    alone = pooled_result("eager-cpu", 8192, dense, structured, steady[:1])
    assert alone.processes == 1 and alone.blocks_per_process == 400
    odd = [tuple(1.3 * r for r in steady[0]), *steady[1:]]  # one process saw a different machine
    pooled = pooled_result("eager-cpu", 8192, dense, structured, odd)
    assert pooled.processes == 3 and pooled.blocks_per_process == 20 and pooled.method == "interleaved"
    assert abs(pooled.speedup_median - 2.0) < abs(1.3 * 2.0 - 2.0) / 2  # the odd process does not own the figure
    assert pooled.ci_high > 2.0 * 1.1  # and the interval says the processes disagree
    assert pooled.flop_ratio == 3.0


def test_config_and_result_shapes():
    with pytest.raises(UserError):
        PairedConfig(cycles=1)
    result = PairedResult("ort-cpu", 8192, "structured", "dense", 2.0, 1.9, 2.1, 3, 32, 3.1)
    assert result.ci_half_width == pytest.approx(0.05)
    assert set(result.to_dict()) == {"backend", "batch", "variant", "baseline", "speedup_median", "ci_low", "ci_high",
                                     "processes", "blocks_per_process", "flop_ratio", "method", "process_medians",
                                     "load", "unstable", "unstable_reason", "process_spread", "unstable_threshold"}


def test_sandwiched_rounds_cancel_linear_drift():
    """Dense is twice as slow; the machine slows by 1 % per call: the before/after average still reads 2.0,
    where pairing each round with the dense call before it alone would read low."""
    slowdown = [1 + 0.01 * step for step in range(41)]  # dense, variant, dense, variant, ... dense
    dense = [2.0 * slowdown[i] for i in range(0, 41, 2)]
    variant = [1.0 * slowdown[i] for i in range(1, 41, 2)]
    assert sandwich_ratios(dense, variant) == pytest.approx([2.0] * 20)
    assert float(np.median([d / v for d, v in zip(dense, variant)])) < 1.99
    with pytest.raises(ValueError, match="one more baseline time"):
        sandwich_ratios(dense[:-1], variant)
