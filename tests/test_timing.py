"""The timing code measures what it claims: known call times come out right, blocks are calibrated, warm-up ignores
a burst, and thread counts are fixed as recorded. Times are virtual (`tests.virtual_clock`), so no assertion depends
on how busy the machine is; the one real-clock test asserts only what load cannot break."""
from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch

from spinn_export.bench.timing import calibrate, default_threads, fix_threads, time_block, warm_up
from spinn_export.errors import UserError

from .virtual_clock import VirtualMachine


def scripted(durations: list[float]) -> tuple[Callable[[], None], Callable[[], float], list[float]]:
    """A call whose n-th run costs durations[n] virtual seconds, the clock it advances, and the costs still unspent."""
    now, left = [0.0], list(durations)

    def call() -> None:
        now[0] += left.pop(0)
    return call, lambda: now[0], left


def test_a_call_of_a_known_time_is_measured_right():
    machine = VirtualMachine(noise=0.0)
    call = machine.work(0.004)
    warm_up(call, clock=machine.clock)
    calls = calibrate(call, block_seconds=0.02, clock=machine.clock)
    assert calls == 5  # blocks are several calls, not one
    assert [time_block(call, calls, machine.clock) for _ in range(4)] == pytest.approx([0.004] * 4)
    before = machine.calls
    time_block(call, 7, machine.clock)
    assert machine.calls - before == 7  # seconds per call: the block's time over the calls it made


def test_on_the_real_clock_a_sleep_is_never_measured_short():
    """time.sleep never returns early and load only lengthens it, so a per-call time under the sleep is a counting
    error (the block divided by the wrong number of calls), whatever else the machine runs."""
    calls = 3
    assert time_block(lambda: time.sleep(0.002), calls) >= 0.002


def test_blocks_are_calibrated_to_the_requested_length():
    machine = VirtualMachine(noise=0.0)
    assert calibrate(machine.work(0.002), block_seconds=0.03, clock=machine.clock) == 15
    assert calibrate(machine.work(1e-6), block_seconds=0.03, clock=machine.clock) == 30_000  # sized on a long block
    assert calibrate(machine.work(0.1), block_seconds=0.03, clock=machine.clock) == 1  # never fewer than one call
    burst, clock, _ = scripted([0.020, 0.002, 0.002, *[0.002] * 4])  # a neighbour's burst hits the first probe
    assert calibrate(burst, block_seconds=0.03, clock=clock) == 15


def test_warm_up_runs_its_minimum_and_ignores_the_first_call_and_a_burst():
    # lazy initialisation (50 ms), two settled calls, one caught by a burst (10 ms), then settled again
    call, clock, left = scripted([0.050, 0.001, 0.001, 0.010, *[0.001] * 10])
    assert warm_up(call, min_calls=3, min_seconds=0.06, clock=clock) == pytest.approx(0.001)  # not the mean's 4 ms
    assert len(left) == 10  # it ran until 60 ms had passed: four calls
    slow, clock, left = scripted([1.0] * 5)
    assert warm_up(slow, min_calls=3, min_seconds=0.05, clock=clock) == 1.0 and len(left) == 2  # at least 3 calls


def test_time_block_uses_the_given_clock():
    ticks = iter(range(0, 100, 10))
    assert time_block(lambda: None, 5, clock=lambda: float(next(ticks))) == 2.0


def test_threads_are_fixed_and_bad_counts_refused():
    before = torch.get_num_threads()
    try:
        assert fix_threads(1) == 1 and torch.get_num_threads() == 1
        assert fix_threads() == default_threads() >= 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(UserError, match="positive integer"):
        fix_threads(0)
