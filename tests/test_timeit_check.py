"""The timeit cross-check (bench/test_timeit.py) can fail: a harness that adds work is caught."""
from __future__ import annotations

from .conftest import Pipeline, run_bench


def test_a_harness_that_adds_work_fails_the_timeit_cross_check(pipeline: Pipeline) -> None:
    proc = run_bench("-p", "tests.slow_harness_plugin", "bench", "-k", "timeit",
                     f"--spinn-artifacts={pipeline.manifest.parent}", "--spinn-backends=ort-cpu",
                     "--spinn-variants=dense", "--spinn-batches=256", "--spinn-quick", "--spinn-threads=1")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "the harness distorts the timing" in proc.stdout and "1 failed" in proc.stdout
