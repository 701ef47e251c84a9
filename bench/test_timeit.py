"""Cross-check: the suite's ort-cpu median against an independent `timeit` of `session.run`.

Same session, same input array, same process, but Python's own `timeit` loop instead of the
suite's harness (fixtures, calibration, pytest-benchmark's rounds).  If the harness distorted the
figure, the two disagree.  Same process on purpose: a fresh process alone drifts 10-20 % from the
next on a shared machine (different core placement), which would hide a harness error in noise.
Even in one process the machine drifts between the two measurements, so the check is opt-in
(`--spinn-timeit-check`): the paired ABBA speedup is the figure that holds up on a shared machine.
"""
from __future__ import annotations

import statistics
import timeit

import numpy as np
import pytest

from spinn_export.backends import sample_input

from .conftest import Settings

TOLERANCE = 0.10


@pytest.fixture(params=["structured", "dense"])
def variant(request: pytest.FixtureRequest) -> str:
    return request.param


def test_ort_cpu_median_agrees_with_timeit(variant: str, spinn: Settings, request: pytest.FixtureRequest) -> None:
    if not request.config.getoption("spinn_timeit_check"):
        pytest.skip("timeit cross-check not requested (--spinn-timeit-check)")
    measured = [(batch, spinn.medians[("ort-cpu", variant, batch)]) for batch in spinn.batches
                if ("ort-cpu", variant, batch) in spinn.medians]
    if not measured:
        pytest.skip(f"ort-cpu {variant} was not benchmarked in this session")
    runner = spinn.runners[("ort-cpu", variant)]
    disagree = []
    for batch, suite in measured:
        feeds = {runner.input_name: np.ascontiguousarray(sample_input(batch, spinn.refs[variant].in_features))}
        timer = timeit.Timer(lambda: runner.session.run(None, feeds))
        number, _ = timer.autorange()
        independent = statistics.median(t / number for t in timer.repeat(repeat=7, number=number))
        ratio = suite / independent
        print(f"ort-cpu {variant} batch={batch}: suite {suite * 1e6:.1f} us, timeit {independent * 1e6:.1f} us, "
              f"ratio {ratio:.3f}")
        if abs(ratio - 1.0) >= TOLERANCE:
            disagree.append(f"batch {batch}: suite {suite * 1e6:.1f} us vs timeit {independent * 1e6:.1f} us")
    assert not disagree, f"ort-cpu {variant} differs from timeit by {TOLERANCE:.0%} or more: " + "; ".join(disagree)
