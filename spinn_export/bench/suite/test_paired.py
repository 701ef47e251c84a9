"""Paired speedups of every variant over dense, per backend and batch: ABBA blocks in fresh processes.

Runs after the latency matrix (file order) and stores its results in the benchmark JSON's "spinn" key.
"""
from __future__ import annotations

import pytest

from spinn_export.bench.backends import get_backend
from spinn_export.bench.paired import paired_speedups

from spinn_export.bench.plugin import Settings


def test_paired_speedup(paired_backend: str, spinn: Settings) -> None:
    backend = get_backend(paired_backend)
    reason = backend.unavailable_reason()
    if reason is not None:
        pytest.skip(f"{paired_backend}: {reason}")
    baseline = spinn.refs["dense"] if "dense" in spinn.refs else pytest.skip("no dense model to pair against")
    candidates = [spinn.refs[v] for v in spinn.paired_variants if spinn.refs[v].unsupported_reason(backend) is None]
    if not candidates or baseline.unsupported_reason(backend) is not None:
        pytest.skip(f"{paired_backend}: no variant to pair with dense")
    results = paired_speedups(paired_backend, baseline, candidates, spinn.batches, spinn.threads, spinn.paired)
    spinn.paired_results.extend(results)
    for result in results:
        assert result.ci_low <= result.speedup_median <= result.ci_high
