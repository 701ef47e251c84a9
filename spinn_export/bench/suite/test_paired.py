"""Paired speedups of every variant over dense, per backend and batch: ABBA blocks in fresh processes.

Runs after the latency matrix (module order) and stores its results in the benchmark JSON's "spinn" key, each with
its stability verdict (`bench.stability`) and the load the machine carried while it was measured (`bench.load`).
"""
from __future__ import annotations

import dataclasses

import pytest

from spinn_export.bench.backends import get_backend
from spinn_export.bench.paired import paired_speedups
from spinn_export.bench.session import SuiteState


def test_paired_speedup(spinn_paired_backend: str, spinn_session: SuiteState) -> None:
    backend = get_backend(spinn_paired_backend)
    reason = backend.unavailable_reason()
    if reason is not None:
        pytest.skip(f"{spinn_paired_backend}: {reason}")
    refs, settings = spinn_session.refs, spinn_session.settings
    baseline = spinn_session.dense
    if baseline is None or baseline.unsupported_reason(backend) is not None:
        pytest.skip(f"{spinn_paired_backend}: no dense model to pair against")
    candidates = [refs[v] for v in settings.paired_variants if refs[v].unsupported_reason(backend) is None]
    if not candidates:
        pytest.skip(f"{spinn_paired_backend}: no variant to pair with dense")
    results = paired_speedups(spinn_paired_backend, baseline, candidates, settings.batches, settings.threads,
                              settings.paired, settings.backend_configs.get(spinn_paired_backend))
    load = spinn_session.load_now()
    spinn_session.paired_results.extend(
        dataclasses.replace(r, load=load.to_dict() if load is not None else None) for r in results)
    for result in results:
        assert result.ci_low <= result.speedup_median <= result.ci_high
