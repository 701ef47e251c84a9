"""The fastest verified deployment at each batch (`bench.fastest`): each backend's fastest case of the latency matrix
within the accuracy budget (the matrix's medians, kept by `plugin.pytest_runtest_makereport`) is a finalist, the
finalists are timed in A B B A blocks against dense float32 on ort-cpu, and the highest paired speedup wins.

It must run after the matrix: pytest collects a folder's modules in name order, and this name sorts after
test_latency.py (and the suite's other modules). A batch without a result says why, in the JSON
(`spinn.fastest_skipped`) and as the skip's reason: ort-cpu not benchmarked or unavailable, no dense float32 model
for it, no passed case, or no verified one.
"""
from __future__ import annotations

from dataclasses import replace
from typing import NoReturn

import pytest

from spinn_export.bench.backends import get_backend, sample_input
from spinn_export.bench.bound import deployment_bound
from spinn_export.bench.ceilings import case_ceiling
from spinn_export.bench.fastest import (
    REFERENCE_BACKEND,
    Candidate,
    NotMeasured,
    decide,
    finalists,
    measure_fastest,
    verdict_for,
    with_bound,
)
from spinn_export.bench.paired import INTERLEAVED_METHOD, switches_runtime
from spinn_export.bench.session import SuiteState, runner_for
from spinn_export.export.formats import ceiling_precision


def test_fastest_verified_deployment(spinn_fastest_batch: int, spinn_session: SuiteState) -> None:
    batch, settings = spinn_fastest_batch, spinn_session.settings

    def not_measured(reason: str) -> NoReturn:
        spinn_session.fastest_skipped.append(NotMeasured(batch, reason))
        pytest.skip(f"fastest deployment at batch {batch}: {reason}")

    if REFERENCE_BACKEND not in {b.name for b in settings.backends}:
        not_measured(f"{REFERENCE_BACKEND} is not among the benchmarked backends, and the speedup is over dense "
                     f"float32 on {REFERENCE_BACKEND}")
    reference = get_backend(REFERENCE_BACKEND)
    unavailable = reference.unavailable_reason()
    if unavailable is not None:
        not_measured(f"{REFERENCE_BACKEND} is unavailable ({unavailable})")
    dense = spinn_session.dense
    if dense is None or dense.unsupported_reason(reference) is not None:
        not_measured(f"no dense float32 model runs on {REFERENCE_BACKEND}")
    speedups = {(r.backend, r.variant): r.speedup_median for r in spinn_session.paired_results
                if r.batch == batch and r.method == INTERLEAVED_METHOD}
    candidates = [Candidate(backend, variant, latency,
                            verdict_for(spinn_session.refs[variant], get_backend(backend).format),
                            speedups.get((backend, variant), 1.0))
                  for (backend, measured_batch, variant), latency in spinn_session.latencies.items()
                  if measured_batch == batch]
    if not candidates:
        not_measured("no latency case passed at this batch")
    chosen = finalists(candidates)
    if not chosen:
        unverified = sorted({f"{c.variant}: {c.verdict.by}" for c in candidates})
        not_measured(f"no measured variant is within the accuracy budget ({'; '.join(unverified)})")
    baseline_runner = runner_for(spinn_session, reference, dense)
    x = sample_input(batch, dense.in_features)
    measured = []
    for candidate in chosen:
        ref = spinn_session.refs[candidate.variant]
        backend = get_backend(candidate.backend)
        runner = runner_for(spinn_session, backend, ref)
        with runner.guard(), baseline_runner.guard():  # compile: refuses recompiles while timed
            result = measure_fastest(batch, candidate, ref.variant.precision, runner.prepare(x),
                                     baseline_runner.prepare(x), settings.paired,
                                     across_runtimes=switches_runtime(reference.runtime, backend.runtime))
        ceiling = case_ceiling(spinn_session.ceilings, backend.device, ref.variant.precision)
        measured.append(with_bound(result, ref.flops_per_sample * batch, ceiling_precision(ref.variant.precision),
                                   None if ceiling is None else ceiling.gflops))
    result = decide(measured)
    backend, ref = get_backend(result.backend), spinn_session.refs[result.variant]
    chosen_runner = runner_for(spinn_session, backend, ref)
    profiled = chosen_runner.time_by_operator(x)  # where its time goes, by its runtime's own profiler: shares only
    configs = settings.backend_configs
    with chosen_runner.guard():  # its own kernels at its own shapes, interleaved with it (`bench.bound`)
        same_kernel = deployment_bound(backend, None if ref.variant.sparse else ref.file(backend.format), batch,
                                       settings.threads, configs.get(backend.name), chosen_runner.prepare(x),
                                       settings.paired.cycles, settings.paired.block_seconds,
                                       (reference, configs.get(reference.name)))
    result = replace(result, time_by_operator=None if profiled is None else profiled.to_dict(), same_kernel=same_kernel)
    spinn_session.fastest.append(result)
    assert result.ci_low <= result.speedup_vs_dense_fp32 <= result.ci_high
