"""Cross-check: the suite's ort-cpu median against an independent `timeit` of `session.run`.

Same model file, same input, same thread count, but a plain session in fresh interpreters timed
by Python's own `timeit`: nothing of the suite's harness (global thread pool, warm-up, fixtures,
pytest-benchmark's loop, other backends' threads) is shared.  If the harness distorted the
figure, the two disagree.  One process's figure drifts 10-20 % from the next on a shared machine,
so the independent figure is the median over several fresh processes.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest

from spinn_export.backends import get_backend

from .conftest import Settings

TOLERANCE = 0.10
PROCESSES = 3
INDEPENDENT_TIMEIT = """
import json, statistics, sys, timeit
import onnxruntime as ort
from spinn_export.backends import sample_input
path, batch, threads, in_features = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
options = ort.SessionOptions()
options.intra_op_num_threads = threads
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
feeds = {session.get_inputs()[0].name: sample_input(batch, in_features)}
timer = timeit.Timer(lambda: session.run(None, feeds))
number, _ = timer.autorange()
print(json.dumps(statistics.median(t / number for t in timer.repeat(repeat=7, number=number))))
"""


@pytest.fixture(params=["structured", "dense"])
def variant(request: pytest.FixtureRequest) -> str:
    return request.param


def independent_median(path: str, batch: int, threads: int, in_features: int) -> float:
    medians = []
    for _ in range(PROCESSES):
        completed = subprocess.run([sys.executable, "-c", INDEPENDENT_TIMEIT, path, str(batch), str(threads), str(in_features)],
                                   capture_output=True, text=True, check=True, timeout=300)
        medians.append(float(json.loads(completed.stdout.strip().splitlines()[-1])))
    return statistics.median(medians)


def test_ort_cpu_median_agrees_with_timeit(variant: str, spinn: Settings) -> None:
    measured = [(batch, spinn.medians[("ort-cpu", variant, batch)]) for batch in spinn.batches
                if ("ort-cpu", variant, batch) in spinn.medians]
    if not measured:
        pytest.skip(f"ort-cpu {variant} was not benchmarked in this session")
    ref = spinn.refs[variant]
    path = str(ref.file(get_backend("ort-cpu").format))
    disagree = []
    for batch, suite in measured:
        independent = independent_median(path, batch, spinn.threads, ref.in_features)
        ratio = suite / independent
        print(f"ort-cpu {variant} batch={batch}: suite {suite * 1e6:.1f} us, timeit {independent * 1e6:.1f} us, "
              f"ratio {ratio:.3f}")
        if abs(ratio - 1.0) >= TOLERANCE:
            disagree.append(f"batch {batch}: suite {suite * 1e6:.1f} us vs timeit {independent * 1e6:.1f} us")
    assert not disagree, f"ort-cpu {variant} differs from timeit by {TOLERANCE:.0%} or more: " + "; ".join(disagree)
