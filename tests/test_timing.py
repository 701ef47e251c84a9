"""The timing code measures what it claims: known delays come out right, blocks are calibrated,
and thread counts are fixed as recorded."""
from __future__ import annotations

import time

import pytest
import torch

from spinn_export.bench.timing import calibrate, default_threads, fix_threads, time_block, warm_up
from spinn_export.errors import UserError


def sleeper(seconds: float):
    return lambda: time.sleep(seconds)


def test_a_backend_that_sleeps_a_known_time_is_measured_within_tolerance():
    call = sleeper(0.004)
    warm_up(call)
    calls = calibrate(call, block_seconds=0.02)
    assert calls >= 2  # blocks are several calls, not one
    per_call = [time_block(call, calls) for _ in range(4)]
    # sleep never returns early, so anything under 4 ms is a counting error; the upper bound allows scheduler overshoot
    assert all(0.004 <= t < 0.004 * 1.5 + 0.002 for t in per_call)


def test_blocks_are_calibrated_to_the_requested_length():
    calls = calibrate(sleeper(0.002), block_seconds=0.03)
    assert 5 <= calls <= 15
    per_call = time_block(sleeper(0.002), calls)
    assert per_call >= 0.002


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
