"""Cross-check: the suite's ort-cpu median against an independent `timeit` of `session.run`.

Same model file, same input, same threads, a separate session, Python's own timer: if the suite's
harness (warm-up, fixtures, pytest-benchmark's loop) distorted the figure, the two disagree.
"""
from __future__ import annotations

import statistics
import timeit

import numpy as np
import pytest

from spinn_export.backends import get_backend, sample_input
from spinn_export.backends.ort import open_session

from .conftest import Settings

TOLERANCE = 0.10


@pytest.fixture(params=["structured", "dense"])
def variant(request: pytest.FixtureRequest) -> str:
    return request.param


def test_ort_cpu_median_agrees_with_timeit(variant: str, spinn: Settings) -> None:
    measured = [(batch, spinn.medians[("ort-cpu", variant, batch)]) for batch in spinn.batches
                if ("ort-cpu", variant, batch) in spinn.medians]
    if not measured:
        pytest.skip(f"ort-cpu {variant} was not benchmarked in this session")
    disagree = []
    for batch, suite in measured:
        ref = spinn.refs[variant]
        session = open_session(ref.file(get_backend("ort-cpu").format), "cpu", spinn.threads)
        feeds = {session.get_inputs()[0].name: np.ascontiguousarray(sample_input(batch, ref.in_features))}
        timer = timeit.Timer(lambda: session.run(None, feeds))
        number, _ = timer.autorange()
        independent = statistics.median(t / number for t in timer.repeat(repeat=7, number=number))
        ratio = suite / independent
        print(f"ort-cpu {variant} batch={batch}: suite {suite * 1e6:.1f} us, timeit {independent * 1e6:.1f} us, "
              f"ratio {ratio:.3f}")
        if abs(ratio - 1.0) >= TOLERANCE:
            disagree.append(f"batch {batch}: suite {suite * 1e6:.1f} us vs timeit {independent * 1e6:.1f} us")
    assert not disagree, f"ort-cpu {variant} differs from timeit by {TOLERANCE:.0%} or more: " + "; ".join(disagree)
